"""Errors for bad user input: one sentence naming the file or argument and what is wrong.

The CLI prints these as a single line instead of a traceback; Python callers can catch them as
`ValueError` (or `FileNotFoundError` for missing paths).
"""


class InputError(ValueError):
    """A config value, file or dataset that cannot be used as given."""


class MissingInputError(InputError, FileNotFoundError):
    """A file or folder that should exist does not."""


class DownloadError(InputError, ConnectionError):
    """Something had to be downloaded and could not be (usually: no internet access)."""


class CheckpointError(InputError):
    """A checkpoint or weights file that cannot be used: cut short, not a checkpoint, holding code,
    or written by another task."""


class TrainingDivergedError(InputError):
    """The training loss became NaN or infinite: usually too high a learning rate (a config
    problem, hence an InputError: one line and exit status 2 through the CLI). `step` is the global
    step the batch was trained at (the optimizer steps before it), `loss` the value it gave."""

    def __init__(self, message: str, step: int, epoch: int, batch_idx: int, loss: float) -> None:
        super().__init__(message)
        self.step, self.epoch, self.batch_idx, self.loss = step, epoch, batch_idx, loss
