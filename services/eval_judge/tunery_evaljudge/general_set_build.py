"""Builds the general-abilities regression set (data/general_abilities.jsonl), deterministically.

    python -m tunery_evaljudge.general_set_build   # rewrites the file

Four categories, each answer checkable without a judge: arithmetic (seeded random operands),
instruction following (topic x constraint), formatting (JSON with given keys, bulleted and
numbered lists of N items) and short factual questions with one checkable answer. Every item
ends with a reference answer that passes its own check, so the file is also a valid chat JSONL.
"""

import json
import random
from pathlib import Path

DATA_FILE = Path(__file__).parent / "data" / "general_abilities.jsonl"
SEED = 20240611

# topic, one sentence about it without commas, five words describing it
TOPICS = [
    ("the ocean", "The ocean covers most of our planet.", "vast deep blue salty restless"),
    ("coffee", "Coffee helps many people start their day.", "dark bitter warm rich aromatic"),
    ("autumn", "Autumn turns the leaves red and gold.", "crisp golden cool windy colourful"),
    ("a bicycle", "A bicycle is a quiet way to travel.", "light fast simple green practical"),
    ("the moon", "The moon lights up the night sky.", "pale round distant bright silent"),
    ("friendship", "Friendship makes hard times easier.", "loyal warm honest lasting kind"),
    ("rain", "Rain brings water to thirsty fields.", "wet grey steady cool refreshing"),
    ("mountains", "Mountains rise high above the valleys.", "tall rocky snowy steep majestic"),
    ("a library", "A library lends books to everyone.", "quiet calm vast orderly welcoming"),
    ("music", "Music can change the mood of a room.", "lively moving rhythmic joyful universal"),
    ("the city at night", "The city glows with lights at night.", "bright busy loud electric alive"),
    ("gardening", "Gardening teaches patience and care.", "green calm slow earthy rewarding"),
    ("winter", "Winter brings short days and long nights.", "cold white dark still frosty"),
    (
        "a train journey",
        "A train journey shows the country passing by.",
        "long scenic steady relaxing rhythmic",
    ),
    ("the sun", "The sun gives light and warmth to the earth.", "hot bright golden huge distant"),
]
START_WORDS = ["Perhaps", "Today", "Honestly", "Surely", "Sometimes"]
END_PHRASE = "That is all"

JSON_OBJECTS = [
    ("a fictional book", {"title": "The Quiet Harbour", "author": "Mara Voss", "year": 2011}),
    ("a city", {"city": "Lisbon", "country": "Portugal", "population": 545000}),
    ("a pet", {"name": "Biscuit", "species": "dog", "age": 4}),
    ("a recipe", {"dish": "pancakes", "ingredients": ["flour", "milk", "eggs"], "minutes": 20}),
    ("a movie", {"title": "Night Train", "director": "Ana Ruiz", "year": 2019}),
    ("a person", {"first_name": "Lena", "last_name": "Park", "age": 34}),
    ("a car", {"make": "Volvo", "model": "V60", "year": 2020}),
    ("a planet", {"name": "Saturn", "moons": 146, "has_rings": True}),
    ("a song", {"title": "Blue Morning", "artist": "The Lanterns", "duration_seconds": 214}),
    ("a company", {"name": "Northwind", "founded": 1998, "employees": 250}),
]
LISTS = [
    ("fruits", ["apple", "banana", "cherry", "mango", "pear", "plum"]),
    ("colours", ["red", "blue", "green", "yellow", "purple", "orange"]),
    ("animals", ["cat", "dog", "horse", "rabbit", "owl", "fox"]),
    ("countries", ["France", "Japan", "Brazil", "Kenya", "Canada", "India"]),
    ("musical instruments", ["piano", "guitar", "violin", "drum", "flute", "cello"]),
    ("vegetables", ["carrot", "onion", "potato", "pepper", "leek", "pea"]),
    ("sports", ["football", "tennis", "rowing", "cycling", "golf", "judo"]),
    ("kitchen utensils", ["spoon", "whisk", "ladle", "spatula", "knife", "grater"]),
]

CAPITALS = [
    ("France", ["Paris"]),
    ("Japan", ["Tokyo"]),
    ("Italy", ["Rome"]),
    ("Germany", ["Berlin"]),
    ("Spain", ["Madrid"]),
    ("Canada", ["Ottawa"]),
    ("Australia", ["Canberra"]),
    ("Egypt", ["Cairo"]),
    ("Kenya", ["Nairobi"]),
    ("Argentina", ["Buenos Aires"]),
    ("Norway", ["Oslo"]),
    ("Portugal", ["Lisbon"]),
    ("Greece", ["Athens"]),
    ("Turkey", ["Ankara"]),
    ("South Korea", ["Seoul"]),
    ("Russia", ["Moscow"]),
    ("Thailand", ["Bangkok"]),
    ("Peru", ["Lima"]),
    ("Ireland", ["Dublin"]),
    ("Poland", ["Warsaw"]),
    ("Austria", ["Vienna"]),
    ("Brazil", ["Brasília", "Brasilia"]),
]
FACTS = [
    ("What is the chemical symbol for gold?", ["Au"]),
    ("What is the chemical symbol for iron?", ["Fe"]),
    ("Which planet is known as the Red Planet?", ["Mars"]),
    ("What is the largest planet in our solar system?", ["Jupiter"]),
    ("Who wrote the play Romeo and Juliet?", ["Shakespeare"]),
    ("Who painted the Mona Lisa?", ["Leonardo", "da Vinci"]),
    ("What is the largest ocean on Earth?", ["Pacific"]),
    ("How many continents are there on Earth?", ["7", "seven"]),
    ("At sea level, at what temperature in degrees Celsius does water boil?", ["100"]),
    ("How many sides does a hexagon have?", ["6", "six"]),
    ("Which gas do plants take in from the air for photosynthesis?", ["carbon dioxide", "CO2"]),
    ("What is the hardest natural substance?", ["diamond"]),
    ("How many minutes are there in an hour?", ["60", "sixty"]),
    ("What is the smallest prime number?", ["2", "two"]),
]


def _item(category: str, index: int, prompt: str, reference: str, check: dict) -> dict:
    return {
        "id": f"{category}-{index:03d}",
        "category": category,
        "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": reference}],
        "check": check,
    }


def arithmetic(rng: random.Random) -> list[dict]:
    questions: list[tuple[str, int]] = []
    for _ in range(10):
        a, b = rng.randint(100, 999), rng.randint(100, 999)
        questions.append((f"What is {a} + {b}?", a + b))
    for _ in range(8):
        a = rng.randint(100, 999)
        b = rng.randint(10, a)
        questions.append((f"What is {a} - {b}?", a - b))
    for _ in range(8):
        a, b = rng.randint(12, 99), rng.randint(3, 19)
        questions.append((f"What is {a} times {b}?", a * b))
    for _ in range(6):
        b, quotient = rng.randint(3, 12), rng.randint(4, 40)
        questions.append((f"What is {b * quotient} divided by {b}?", quotient))
    for _ in range(2):
        a, b = rng.randint(6, 48), rng.randint(3, 9)
        questions.append((f"A box holds {a} pencils. How many pencils are in {b} boxes?", a * b))
        a, b = rng.randint(20, 90), rng.randint(2, 19)
        questions.append((f"Sam had {a} apples and gave away {b}. How many apples are left?", a - b))
    return [
        _item("arithmetic", i, f"{q} Reply with the number only.", str(v), {"kind": "number", "value": v})
        for i, (q, v) in enumerate(questions, start=1)
    ]


def instruction_following() -> list[dict]:
    items = []
    for i in range(2 * len(TOPICS)):  # every topic under two of the six constraints
        topic, sentence, words = TOPICS[i % len(TOPICS)]
        kind = i % 6
        if kind == 0:
            n = 3 + (i // 6) % 3
            prompt = f"Describe {topic} in exactly {n} words. Reply with those words only."
            reference, check = " ".join(words.split()[:n]).capitalize(), {"kind": "word_count", "n": n}
        elif kind == 1:
            prompt = f"Write one sentence about {topic}, entirely in uppercase letters."
            reference, check = sentence.upper(), {"kind": "uppercase"}
        elif kind == 2:
            prompt = f"Write one sentence about {topic}, entirely in lowercase letters."
            reference, check = sentence.lower(), {"kind": "lowercase"}
        elif kind == 3:
            word = START_WORDS[(i // 6) % len(START_WORDS)]
            prompt = f'Write one sentence about {topic} that begins with the word "{word}".'
            reference, check = (
                f"{word} {sentence[0].lower()}{sentence[1:]}",
                {"kind": "starts_with", "word": word},
            )
        elif kind == 4:
            prompt = f'Write one sentence about {topic}, then end your reply with the words "{END_PHRASE}".'
            reference, check = f"{sentence} {END_PHRASE}.", {"kind": "ends_with", "phrase": END_PHRASE}
        else:
            prompt = f"Write two sentences about {topic} without using any commas."
            reference = f"{sentence} It is worth a closer look."
            check = {"kind": "excludes", "text": ","}
        items.append(_item("instruction_following", i + 1, prompt, reference, check))
    return items


def formatting() -> list[dict]:
    items = []
    for entity, value in JSON_OBJECTS:
        keys = list(value)
        quoted = ", ".join(f'"{k}"' for k in keys[:-1]) + f' and "{keys[-1]}"'
        prompt = (
            f"Reply with only a JSON object describing {entity}, with exactly the keys {quoted}. "
            "No code fences and no other text."
        )
        items.append((prompt, json.dumps(value), {"kind": "json_keys", "keys": keys}))
    for i, (things, examples) in enumerate(LISTS):
        n = 3 + i % 4
        prompt = (
            f'List exactly {n} {things} as a bulleted list, one per line, each line starting with "- ". '
            "Reply with the list only."
        )
        items.append((prompt, "\n".join(f"- {e}" for e in examples[:n]), {"kind": "bullet_list", "n": n}))
    for i, (things, examples) in enumerate(LISTS[:6]):
        n = 3 + i % 3
        prompt = (
            f'List exactly {n} {things} as a numbered list ("1.", "2.", ...), one per line. '
            "Reply with the list only."
        )
        reference = "\n".join(f"{k}. {e}" for k, e in enumerate(examples[:n], start=1))
        items.append((prompt, reference, {"kind": "numbered_list", "n": n}))
    return [_item("formatting", i, p, r, c) for i, (p, r, c) in enumerate(items, start=1)]


def factual() -> list[dict]:
    questions = [
        (f"What is the capital of {country}? Answer with the city name only.", answers)
        for country, answers in CAPITALS
    ]
    questions += [(f"{question} Answer briefly.", answers) for question, answers in FACTS]
    return [
        _item("factual", i, q, answers[0], {"kind": "answer", "aliases": answers})
        for i, (q, answers) in enumerate(questions, start=1)
    ]


def build_general_set() -> list[dict]:
    return arithmetic(random.Random(SEED)) + instruction_following() + formatting() + factual()


def to_jsonl(items: list[dict]) -> str:
    return "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items)


def main() -> None:
    DATA_FILE.parent.mkdir(exist_ok=True)
    DATA_FILE.write_text(to_jsonl(build_general_set()), encoding="utf-8")


if __name__ == "__main__":
    main()
