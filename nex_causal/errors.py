"""The one exception type the toolkit raises for bad input.

Every message is a single line that names the problem and, where there is one, the fix.
The CLI prints it as ``error: <message>`` and exits with status 2 instead of a traceback.
"""


class NexError(Exception):
    """Bad input or state the user can fix (missing file, shape mismatch, unknown name)."""
