# The emulated board's `bluetooth` module: the radio's on/off state only, as
# BLE().active() of the ESP32 port (extmod/modbluetooth.c with NimBLE): every
# BLE() is the board's one radio, active() asks, active(True) starts the
# stack. There is no stack here: nothing advertises, scans or connects.

import _board

_active = [False]


class BLE:
    def active(self, state=None):
        if state is not None:
            if _active[0] != bool(state):
                _board.tell_supervisor("radio bluetooth %d" % int(bool(state)))  # the radio, as seen
            _active[0] = bool(state)
        return _active[0]
