"""Prompts for preference pairs on tiny random models, shared by the DPO tests and the script they launch."""

PROMPTS = [
    "The quick brown fox",
    "Thank you, friend,",
    "Homarus gammarus is",
    "Please be polite",
    "What is wrong with",
    "The lazy dog",
    "I hate",
    "You are",
    "What the hell",
    "The kind words",
    "Be polite here",
    "A species of",
    "Thank you for",
    "Is wrong with",
    "The dog jumps",
    "You stupid",
]
