"""Named errors: every failure a user can cause ends in one of these, with a message that says
what was wrong and what to do. The CLI prints the message (no traceback) and exits with 2."""


class Cifar100Error(Exception):
    """Base class: a problem with the user's input or environment, explained in the message."""


class DownloadError(Cifar100Error):
    """A dataset archive could not be fetched or failed verification."""


class DatasetError(Cifar100Error):
    """A dataset is malformed: truncated or inconsistent pickles, empty classes, missing splits."""


class ImageError(Cifar100Error):
    """A file is not an image Pillow can read, or is too large to decode safely."""


class CheckpointError(Cifar100Error):
    """A checkpoint is missing, corrupt, unsafe (would run code) or does not match."""


class ConfigError(Cifar100Error):
    """A setting makes no sense: unknown preset or dataset, negative epochs, zero batch size..."""


class TrainingDiverged(Cifar100Error):
    """The loss became NaN or infinite; the last good checkpoint is kept."""
