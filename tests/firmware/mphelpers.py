# Helpers shared by the MicroPython unit tests (on MICROPYPATH with them).


def raises(fn, *args):
    """True when fn(*args) raises ValueError."""
    try:
        fn(*args)
    except ValueError:
        return True
    return False
