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


class VideoError(InputError):
    """A video file that cannot be analysed (each reason has its subclass)."""


class NotAVideoError(VideoError):
    """The file is not a video container this app reads (MP4, MOV, WebM, MKV, AVI)."""


class VideoDecodeError(VideoError):
    """A video container whose frames cannot be decoded: truncated or corrupt."""


class EmptyVideoError(VideoError):
    """A video with no frame in it."""


class VideoTooLargeError(VideoError):
    """Past a documented limit: file size, duration or resolution."""


class WeightsError(ExpressionLabError):
    """Missing, corrupt or tampered model weights."""
