"""L6: the ``aitbc`` CLI and the ``aitbc-peer`` daemon; the only code that reads files and env."""
