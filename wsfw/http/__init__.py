"""Plain HTTP on the public listeners: dispatch, request limits and the streaming proxy."""
