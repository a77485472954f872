# Runs sbd.p256 test cases from a file under MicroPython (never CPython).
# Usage: MICROPYPATH=firmware/lib micropython mp_check_vectors.py CASES
# CASES has one case a line: "<op> <id> <hex arg> ..." ("-" is empty bytes);
# prints "<id> <answer>" per case, then "DONE". tests/firmware/p256_vectors.py
# writes the file and compares the answers. Ops and answers:
#   verify pub digest sig -> 1 / 0 (anything but a bool is reported as BAD:)
#   public priv           -> hex public key
#   sign priv digest      -> hex signature
#   point pub             -> 1 / 0: the key decodes to a valid curve point
#   keypair               -> hex private key ":" hex public key, from
#                            generate_keypair()
# An exception is answered as EXC:<type name>.
import gc
import sys
from binascii import hexlify, unhexlify

from sbd import p256


def as_bool(value):
    if value is True:
        return "1"
    if value is False:
        return "0"
    return "BAD:" + repr(value)


def answer(op, args):
    if op == "verify":
        return as_bool(p256.verify(args[0], args[1], args[2]))
    if op == "public":
        return hexlify(p256.public_key(args[0])).decode()
    if op == "sign":
        return hexlify(p256.sign(args[0], args[1])).decode()
    if op == "point":
        return as_bool(p256._decode_point(args[0]) is not None)
    if op == "keypair":
        private_key, public_key = p256.generate_keypair()
        return hexlify(private_key).decode() + ":" + hexlify(public_key).decode()
    return "UNKNOWN-OP:" + op


def main(path):
    count = 0
    with open(path) as cases:
        for line in cases:
            parts = line.split()
            if len(parts) < 2:
                continue
            args = [b"" if a == "-" else unhexlify(a) for a in parts[2:]]
            try:
                result = answer(parts[0], args)
            except Exception as e:  # report it; the host decides
                result = "EXC:" + type(e).__name__
            print(parts[1], result)
            count += 1
            if count % 32 == 0:
                gc.collect()
    print("DONE")


main(sys.argv[1])
