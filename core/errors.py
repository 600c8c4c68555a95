"""Typed exceptions. Everything a user can get wrong is an InputError."""


class ExpressionLabError(Exception):
    """Base class of all ExpressionLab errors."""


class InputError(ExpressionLabError, ValueError):
    """Bad user input: the message says what is wrong and is safe to show to the user."""


class ImageDecodeError(InputError):
    """The bytes or object given are not a readable image."""


class ImageTooLargeError(InputError):
    """The image has more pixels than the documented limit."""


class UnknownLabelError(InputError):
    """A label or class name that is not one of the known expressions."""


class DatasetError(InputError):
    """A data directory or file that cannot be read as a labelled data set."""


class WeightsError(ExpressionLabError):
    """Missing, corrupt or tampered model weights."""
