"""One exception type for everything a user can get wrong.

The CLI catches `UserError` and prints its message as one line (no traceback) with exit code 2, so every
message must say what is wrong *and* what to do about it.
"""


class UserError(Exception):
    """Bad input from the user: a path, a file, an option, a checkpoint. The message is shown as is."""


class DataError(UserError):
    """A data set, archive or image that cannot be read as expected."""


class ConfigError(UserError):
    """An unknown preset, an unknown config key, or a value of the wrong type."""


class CheckpointError(UserError):
    """A checkpoint that is missing, corrupt, unsafe, or from another model."""


class Stopped(UserError):
    """Training stopped by SIGINT or SIGTERM after saving a checkpoint; the CLI exits 130 or 143 with this line."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code
