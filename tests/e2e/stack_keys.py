"""The API keys of the e2e stack, one per org."""

KEYS = {"org-a": "key-org-a", "org-b": "key-org-b"}
