"""What an engine raises for a request it refuses; the gRPC service turns it into INVALID_ARGUMENT."""


class RequestError(ValueError):
    """A request the engine cannot serve as asked, naming the OpenAI parameter at fault."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
