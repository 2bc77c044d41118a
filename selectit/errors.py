"""Errors a user can act on. The CLI prints their message (no traceback) and exits with status 2."""


class SelectITError(Exception):
    """Base class for errors whose message says what is wrong and what to do."""


class InputError(SelectITError):
    """Bad input data, prompt file, config value or model path."""


class IncompleteRatingsError(SelectITError):
    """Rating shards are missing or duplicated for some (sample, prompt, model) keys."""


class NonFiniteLogitsError(SelectITError):
    """A forward pass produced NaN or inf score logits."""
