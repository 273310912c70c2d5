"""Builds the support-ticket routing dataset the demo fine-tunes on (deterministic, seed 7).

Each example: a system prompt naming the categories, a customer ticket, and the answer
`{"category": "<one of CATEGORIES>"}`. Tickets are written from templates with varied products,
amounts, dates, tones and openings, so train and held-out share a distribution but not texts.

    python examples/support_tickets/make_dataset.py   # writes train.jsonl and heldout.jsonl
"""

import json
import random
from pathlib import Path

CATEGORIES = ["billing", "technical", "account", "shipping", "refund", "feedback"]
# Short on purpose: every token of it is trained and billed in every example.
SYSTEM = 'Route the support ticket. Reply with JSON only: {"category": "<category>"}, one of: ' + ", ".join(
    CATEGORIES
)

PRODUCTS = [
    "Aurora headphones",
    "the Pro plan",
    "my Nimbus router",
    "the mobile app",
    "the Basic subscription",
    "a Vega smartwatch",
    "the desktop client",
    "the Family plan",
    "my Orbit speaker",
    "the web dashboard",
]
AMOUNTS = ["$12.99", "$49", "$120", "€35", "£18.50", "$7.99", "$230", "€89"]
DAYS = ["yesterday", "last Monday", "on the 3rd", "two weeks ago", "this morning", "last month", "on Friday"]
OPENINGS = [
    "",
    "Hi, ",
    "Hello team, ",
    "Hey, ",
    "Good morning. ",
    "URGENT: ",
    "Quick question: ",
    "Hi there! ",
]
CLOSINGS = [
    "",
    " Thanks.",
    " Please help.",
    " Thank you in advance.",
    " Any update would be great.",
    " This is frustrating.",
    " Cheers.",
]

TEMPLATES = {
    "billing": [
        "I was charged {amount} twice for {product} {day}.",
        "My invoice for {product} shows {amount} but my plan costs less.",
        "Why did my card get billed {amount} {day}? I didn't change anything.",
        "Can you send me a VAT invoice for the {amount} payment {day}?",
        "The payment for {product} failed {day} but the money left my account.",
        "I need to update the credit card used to pay for {product}.",
        "There is an unknown charge of {amount} on my statement from you.",
        "My bill went up to {amount} without any notice.",
    ],
    "technical": [
        "{product} keeps crashing when I open it since {day}.",
        "I can't connect {product} to wifi, the light just blinks.",
        "Error 503 every time I load {product}.",
        "After the update {day}, {product} is extremely slow.",
        "Sync between {product} and my phone stopped working.",
        "{product} won't turn on anymore, I tried charging it overnight.",
        "Notifications from {product} stopped arriving {day}.",
        "The export button in {product} does nothing when I click it.",
    ],
    "account": [
        "I forgot my password and the reset email never arrives.",
        "How do I change the email address on my account?",
        "My account got locked {day} after too many login attempts.",
        "Please delete my account and all my personal data.",
        "I want to add a second user to {product}.",
        "Two-factor authentication codes are not accepted when I log in.",
        "Someone else may have logged into my account {day}.",
        "How can I change the username on my profile?",
    ],
    "shipping": [
        "My order of {product} still hasn't arrived, it was shipped {day}.",
        "The tracking number for {product} doesn't work.",
        "The package arrived {day} but the box was empty.",
        "Can I change the delivery address for my {product} order?",
        "The courier says my parcel was delivered {day} but I never got it.",
        "How long does shipping to Canada take for {product}?",
        "My {product} order has been stuck in customs since {day}.",
        "I received the wrong item instead of {product}.",
    ],
    "refund": [
        "I returned {product} {day}, when will I get my {amount} back?",
        "I'd like a refund for {product}, it's not what I expected.",
        "You promised a refund of {amount} but nothing came back yet.",
        "I cancelled within the trial, please refund the {amount} charge.",
        "Can I get my money back for {product}? I used it only once.",
        "The refund of {amount} was sent to an old card, what now?",
        "I want to return {product} for a full refund.",
        "Still waiting on the refund for my {amount} order from {day}.",
    ],
    "feedback": [
        "Just wanted to say {product} is great, the new design is lovely.",
        "It would be nice if {product} had a dark mode.",
        "Suggestion: let us export reports from {product} as CSV.",
        "Your support agent {day} was really helpful, thank you!",
        "I love {product} but the onboarding could be shorter.",
        "Please add keyboard shortcuts to {product}.",
        "The latest update to {product} is a big improvement.",
        "Feature idea: shared folders in {product} for teams.",
    ],
}


def ticket(rng: random.Random, category: str, template: str) -> dict:
    text = template.format(product=rng.choice(PRODUCTS), amount=rng.choice(AMOUNTS), day=rng.choice(DAYS))
    text = rng.choice(OPENINGS) + text[0].upper() + text[1:] + rng.choice(CLOSINGS)
    if rng.random() < 0.15:
        text = text.lower()
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": text},
            {"role": "assistant", "content": json.dumps({"category": category})},
        ]
    }


def build(n_train: int = 300, n_heldout: int = 60, seed: int = 7) -> tuple[list[dict], list[dict]]:
    rng = random.Random(seed)
    seen: set[str] = set()
    rows: list[dict] = []
    while len(rows) < n_train + n_heldout:
        category = CATEGORIES[len(rows) % len(CATEGORIES)]  # balanced classes
        row = ticket(rng, category, rng.choice(TEMPLATES[category]))
        text = row["messages"][1]["content"]
        if text not in seen:  # no duplicates, so held-out never leaks into training
            seen.add(text)
            rows.append(row)
    rng.shuffle(rows)
    return rows[:n_train], rows[n_train:]


def main() -> None:
    here = Path(__file__).parent
    train, heldout = build()
    for name, rows in (("train.jsonl", train), ("heldout.jsonl", heldout)):
        (here / name).write_text("".join(json.dumps(row) + "\n" for row in rows))
        print(f"wrote {len(rows)} examples to {here / name}")


if __name__ == "__main__":
    main()
