# Runs MicroPython unit tests under MicroPython itself (never CPython).
# Usage: micropython mp_runner.py path/to/mptest_x.py
# Prints one line per test: "RESULT <name> PASS" or "RESULT <name> FAIL",
# the traceback of a failure before its RESULT line, and "DONE" at the end.
import sys
import gc


def _load(path):
    src = open(path).read()
    g = {"__name__": "mptest"}
    exec(compile(src, path, "exec"), g)
    return g


def main():
    path = sys.argv[1]
    g = _load(path)
    names = sorted(k for k in g if k.startswith("test_") and callable(g[k]))
    for name in names:
        gc.collect()
        try:
            g[name]()
        except Exception as e:  # report, then go on with the next test
            print("TRACEBACK", name)
            sys.print_exception(e)
            print("RESULT", name, "FAIL")
        else:
            print("RESULT", name, "PASS")
    print("DONE")


main()
