"""Recipes: an unlearning target with the data it needs, its rewards, a preset and its evaluation metrics.

- `obscene_numbers`: counting in English words without ever writing a number whose digits hold a forbidden pair.
- `forget_text`: forgetting one play of Tiny Shakespeare while modelling the others as before.
"""
