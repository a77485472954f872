"""The emulated ESP32 behaves like the real board where the harness can tell."""
from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from helpers import mpremote, read_until

import pytest
import serial

from sbd_harness.boards.emulated import EmulatedBoard
from sbd_harness.emulator import netlab
from sbd_harness.paths import boards_dir

UID = "import machine, binascii; print(binascii.hexlify(machine.unique_id()).decode())"


def test_two_boards_have_their_own_id_port_address_and_filesystem(make_board):
    a, b = make_board("a"), make_board("b")
    da, db = a.describe(), b.describe()
    for key in ("unique_id", "serial", "flash", "address" if netlab.namespaces_available() else "name"):
        assert da[key] != db[key], key
    # mpremote, unchanged, on both PTYs; the firmware sees each chip's own ID
    assert mpremote(a.port, "resume", "exec", UID).strip() == da["unique_id"]
    assert mpremote(b.port, "resume", "exec", UID).strip() == db["unique_id"]
    mpremote(a.port, "resume", "exec", "f = open('/kept.txt', 'w'); f.write('on a'); f.close()")
    assert "kept.txt" not in mpremote(b.port, "resume", "exec", "import os; print(os.listdir('/'))")


def test_file_survives_a_power_cut_at_any_instant(make_board):
    board = make_board()
    port_before = board.port
    mpremote(board.port, "resume", "exec", "f = open('/kept.txt', 'w'); f.write('survivor'); f.close()")
    since = board.log_size()
    os.kill(board.cpu_pid(), signal.SIGKILL)  # the power goes, from outside the board
    board.wait_for_output(">>> ", since, after="rst:0x1")
    assert board.port == port_before, "the serial port must survive the power cut"
    assert mpremote(board.port, "resume", "exec", "print(open('/kept.txt').read())").strip() == "survivor"
    assert mpremote(board.port, "resume", "exec", "import machine; print(machine.reset_cause())").strip() == "1"


def test_a_write_cut_midway_leaves_a_mountable_filesystem(make_board):
    """Power cuts during writes: littlefs keeps the old or the new file, never a broken fs."""
    board = make_board()
    mpremote(board.port, "resume", "exec", "f = open('/a.txt', 'w'); f.write('old'); f.close()")
    writer = ("import os\nwhile True:\n f = open('/b.tmp', 'w'); f.write('x' * 3000); f.close()\n"
              " os.rename('/b.tmp', '/a.txt')\n")
    for delay in (0.05, 0.13, 0.21):
        with serial.Serial(board.port, timeout=0.1) as port:
            port.write(b"\r\x03\x03\x05" + writer.encode().replace(b"\n", b"\r") + b"\x04")
            time.sleep(delay)
        board.reset_and_wait("power-cut")
        content = mpremote(board.port, "resume", "exec", "print(open('/a.txt').read())").strip()
        assert content in ("old", "x" * 3000)


def test_serial_port_shows_boot_output_and_survives_every_reset(make_board):
    board = make_board()
    port_path = board.port
    with serial.Serial(port_path, timeout=0.1) as port:
        port.reset_input_buffer()
        board.reset("hard")
        out = read_until(port, b">>> ")
    assert b"rst:0x1 (POWERON_RESET)" in out and b"MicroPython v1." in out
    for kind in ("soft", "hard", "power-cut"):
        board.reset_and_wait(kind)
        assert board.port == port_path


@pytest.mark.parametrize("how, cause, rom_line", [
    ("hard", 1, "rst:0x1 (POWERON_RESET)"),          # EN pin: a chip power-on reset
    ("power-cut", 1, "rst:0x1 (POWERON_RESET)"),
    ("machine.reset", 2, "rst:0xc (SW_CPU_RESET)"),  # esp_restart(): HARD_RESET
])
def test_reset_cause_follows_the_reset(module_board, how, cause, rom_line):
    board = module_board
    if how == "machine.reset":
        since = board.log_size()
        with serial.Serial(board.port, timeout=0.1) as port:
            port.write(b"\r\x03import machine; machine.reset()\r")
        text = board.wait_for_output(">>> ", since, after=rom_line)
    else:
        text = board.reset_and_wait(how)
    assert rom_line in text
    assert mpremote(board.port, "resume", "exec", "import machine; print(machine.reset_cause())").strip() == str(cause)


def test_soft_reset_reports_soft_reset_and_runs_boot_py(module_board):
    board = module_board
    mpremote(board.port, "resume", "exec", "f = open('/boot.py', 'w'); f.write('print(\"BOOTPY RAN\")'); f.close()")
    since = board.log_size()
    out = mpremote(board.port, "soft-reset", "exec", "import machine; print(machine.reset_cause())")
    assert out.strip().splitlines()[-1] == "5"
    assert "MPY: soft reboot" in board.wait_for_output("BOOTPY RAN", since)


def test_ctrl_c_interrupts_running_code_unless_disabled(module_board):
    board = module_board
    with serial.Serial(board.port, timeout=0.1) as port:
        port.write(b"\r\x03\x02")
        read_until(port, b">>> ")
        port.write(b"while True: pass\r\r")
        time.sleep(0.3)
        port.write(b"\x03")
        assert b"KeyboardInterrupt" in read_until(port, b">>> ")
        # micropython.kbd_intr(-1): Ctrl-C becomes an ordinary byte, as on the chip
        port.write(b"import micropython, sys; micropython.kbd_intr(-1); print('GOT', sys.stdin.buffer.read(1))\r")
        time.sleep(0.3)
        port.write(b"\x03")
        assert b"GOT b'\\x03'" in read_until(port, b">>> ")


# Long work in C with no check point of the VM in it: about a second at host speed.
LONG_C_WORK = "n = str(7 ** 20000)"


def test_ctrl_c_is_pending_until_the_next_check_point_as_on_the_chip(module_board):
    """ports/esp32/uart.c only schedules the KeyboardInterrupt; py/vm.c raises it at the next jump.
    A Ctrl-C during C work inside a try is raised at the jump that leaves the try, outside it."""
    code = ("print('GO')\ntry:\n    " + LONG_C_WORK + "\nexcept KeyboardInterrupt:\n    print('CAUGHT')\n"
            "print('AFTER')\n")
    with serial.Serial(module_board.port, timeout=0.2) as port:
        port.write(b"\r\x03\x03\x01")
        read_until(port, b"raw REPL; CTRL-B to exit\r\n>")
        port.write(code.encode() + b"\x04")
        read_until(port, b"GO")
        port.write(b"\x03")
        out = read_until(port, b"\x04>")
        port.write(b"\x02")
    assert b"KeyboardInterrupt" in out, out
    assert b"CAUGHT" not in out and b"AFTER" not in out, out


def test_the_console_uart_keeps_259_bytes_and_drops_the_rest_as_on_the_chip(module_board):
    """ports/esp32/mphalport.c: stdin_ringbuf_array[260], one slot kept free (py/ringbuf.h); the
    UART handler (ports/esp32/uart.c) drops what arrives while the buffer is full."""
    board = module_board
    dropped_before = board.control({"cmd": "status"})["rx_dropped"]
    code = (b"import micropython, select, sys, time\nmicropython.kbd_intr(-1)\nprint('SLEEP')\ntime.sleep(1)\n"
            b"p = select.poll()\np.register(sys.stdin, select.POLLIN)\nn = 0\n"
            b"while p.poll(50):\n    n += len(sys.stdin.buffer.read(1))\nprint('KEPT', n)\n")
    with serial.Serial(board.port, timeout=0.2) as port:
        port.write(b"\r\x03\x03\x01")
        read_until(port, b"raw REPL; CTRL-B to exit\r\n>")
        for at in range(0, len(code), 64):  # paced: the REPL reads as it comes
            port.write(code[at:at + 64])
            time.sleep(0.02)
        port.write(b"\x04")
        read_until(port, b"SLEEP")
        port.write(bytes(range(0x20, 0x7F)) * 4)  # 380 bytes while nobody reads
        out = read_until(port, b"\x04>")
        port.write(b"\x02")
    assert b"KEPT 259" in out, out
    assert board.control({"cmd": "status"})["rx_dropped"] - dropped_before == 380 - 259


def test_raw_paste_mode_and_errors_follow_the_protocol(module_board):
    with serial.Serial(module_board.port, timeout=0.2) as port:
        port.write(b"\r\x03\x03\x01")
        read_until(port, b"raw REPL; CTRL-B to exit\r\n>")
        port.write(b"\x05A\x01")
        assert port.read(2) == b"R\x01"
        window = int.from_bytes(port.read(2), "little")
        assert window >= 32
        port.write(b"print(6*7)\n1/0\x04")
        out = read_until(port, b"\x04>")
        assert out.startswith(b"\x04") and b"42\r\n\x04" in out and b"ZeroDivisionError" in out
        port.write(b"\x02")


def test_watchdog_resets_a_board_that_stops_feeding_it(module_board):
    board = module_board
    since = board.log_size()
    with serial.Serial(board.port, timeout=0.1) as port:
        port.write(b"\r\x03import machine; wdt = machine.WDT(timeout=400)\r")
    text = board.wait_for_output(">>> ", since, timeout=5, after="TG0WDT_SYS_RESET")
    assert "TG0WDT_SYS_RESET" in text
    assert mpremote(board.port, "resume", "exec", "import machine; print(machine.reset_cause())").strip() == "3"


def test_watchdog_fed_in_time_holds_and_fires_one_timeout_after_the_last_feed_across_a_soft_reset(module_board):
    """feed() is written down for the supervisor, not sent to it: the timer still runs from the
    last feed, on through a soft reset, and expires one timeout after it."""
    board = module_board
    board.reset_and_wait("hard")
    since = board.log_size()
    mpremote(board.port, "resume", "exec",
             "import machine, time\nwdt = machine.WDT(timeout=700)\n"
             "for i in range(15):\n    time.sleep_ms(100)\n    wdt.feed()")  # 1.5 s, twice the timeout
    last_feed = time.monotonic()
    assert "TG0WDT_SYS_RESET" not in board.log_since(since)
    board.reset_and_wait("soft")
    text = board.wait_for_output(">>> ", since, timeout=5, after="TG0WDT_SYS_RESET")
    assert "TG0WDT_SYS_RESET" in text
    assert 0.5 < time.monotonic() - last_feed < 2.5


NVS_WRITE = """
import esp32
n = esp32.NVS('identity')
n.set_blob('secret', b'TOPSECRET-0123456789')
n.set_i32('counter', -42)
n.commit()
"""

NVS_READ = """
import esp32
n = esp32.NVS('identity')
buf = bytearray(64)
size = n.get_blob('secret', buf)
print(bytes(buf[:size]).decode(), n.get_i32('counter'))
try:
    n.get_i32('missing')
except OSError as e:
    print('ERR', e.args[0], e.args[1])
try:
    n.get_blob('secret', bytearray(4))
except OSError as e:
    print('ERR', e.args[0], e.args[1])
"""


def test_nvs_persists_raises_like_esp_idf_and_erases_without_trace(make_board):
    board = make_board()
    mpremote(board.port, "resume", "exec", NVS_WRITE)
    board.reset_and_wait("power-cut")
    lines = mpremote(board.port, "resume", "exec", NVS_READ).strip().splitlines()
    assert lines[0] == "TOPSECRET-0123456789 -42"
    assert lines[1] == "ERR -4354 ESP_ERR_NVS_NOT_FOUND"
    assert lines[2] == "ERR -4364 ESP_ERR_NVS_INVALID_LENGTH"
    assert b"TOPSECRET" in board.flash_image().read_partition("nvs")
    mpremote(board.port, "resume", "exec", "import esp32; esp32.NVS('identity').erase_key('secret')")
    assert b"TOPSECRET" not in board.flash_image().read_partition("nvs")


PARTITIONS = """
import esp32, json, os
P = esp32.Partition
print(json.dumps({
  'data': [p.info()[4] for p in P.find(P.TYPE_DATA)],
  'app': [p.info()[4] for p in P.find(P.TYPE_APP)],
  'vfs': list(P.find(P.TYPE_DATA, label='vfs')[0].info()[:4]),
  'running': P(P.RUNNING).info()[4],
  'statvfs': list(os.statvfs('/')[:3]),
}))
"""


def test_partition_table_and_littlefs_come_from_the_flash_image(module_board):
    info = json.loads(mpremote(module_board.port, "resume", "exec", PARTITIONS).strip())
    assert info["data"] == ["nvs", "otadata", "phy_init", "vfs"]
    assert info["app"] == ["ota_0", "ota_1"] and info["running"] == "ota_0"
    assert info["vfs"] == [1, 0x81, 0x310000, 0xF0000]
    assert info["statvfs"][:1] == [4096] and info["statvfs"][2] == 0xF0000 // 4096
    vfs = module_board.flash_image().read_partition("vfs")
    assert b"littlefs" in vfs[:2 * 4096], "a littlefs2 superblock at the start of the vfs partition"


def test_heap_is_esp32_sized(module_board):
    out = mpremote(module_board.port, "resume", "exec",
                   "import gc; gc.collect(); print(gc.mem_free())\n"
                   "try:\n b = bytearray(200 * 1024)\n print('fits')\nexcept MemoryError:\n print('MemoryError')")
    free, verdict = out.split()
    budget = json.loads((boards_dir() / "emulated" / "board.json").read_text())["firmware_heap_bytes"]
    assert budget * 0.9 < int(free) < budget * 1.05
    assert verdict == "MemoryError"


def test_boot_button_is_gpio0_pulled_up(module_board):
    code = "import machine; print(machine.Pin(0, machine.Pin.IN, machine.Pin.PULL_UP).value())"
    assert mpremote(module_board.port, "resume", "exec", code).strip() == "1"
    module_board.press_boot_button(True)
    assert mpremote(module_board.port, "resume", "exec", code).strip() == "0"
    module_board.press_boot_button(False)
    assert mpremote(module_board.port, "resume", "exec", code).strip() == "1"


def test_erase_wipes_the_filesystem_but_not_micropython(make_board):
    board = make_board()
    mpremote(board.port, "resume", "exec", "f = open('/user.txt', 'w'); f.write('data'); f.close()")
    board.erase_flash()
    assert "Performing initial setup" in board.reset_and_wait("power-cut")
    assert "user.txt" not in mpremote(board.port, "resume", "exec", "import os; print(os.listdir('/'))")


WIFI = """
import network, json, time
w = network.WLAN(network.STA_IF)
w.active(True)
w.connect({ssid!r}, {psk!r})
t0 = time.ticks_ms()
while w.status() == network.STAT_CONNECTING and time.ticks_diff(time.ticks_ms(), t0) < 10000:
    time.sleep_ms(50)  # association takes seconds, as on the chip
print(json.dumps([w.status(), w.isconnected(), w.ifconfig()[0]]))
"""
ASSOCIATED = ("import network, time\nw = network.WLAN()\nt0 = time.ticks_ms()\n"
              "while not w.isconnected() and time.ticks_diff(time.ticks_ms(), t0) < 10000:\n    time.sleep_ms(50)\n"
              "print(w.isconnected())")


@pytest.mark.skipif(not netlab.namespaces_available(), reason="network namespaces need root")
def test_board_network_is_its_own_namespace_with_a_real_link(make_board):
    board = make_board()
    conf = board.conf
    ssid, psk = conf["lab_ssid"], conf["lab_psk"]
    assert json.loads(mpremote(board.port, "resume", "exec", WIFI.format(ssid=ssid, psk="wrong")).strip())[0] == 202
    status, connected, ip = json.loads(mpremote(board.port, "resume", "exec", WIFI.format(ssid=ssid, psk=psk)).strip())
    assert (status, connected, ip) == (1010, True, board.address)
    # a real TCP connection from the board's namespace to the lab host
    server = socket.create_server((netlab.HOST_ADDRESS, 0))
    server.settimeout(10)
    got: list[bytes] = []

    def accept() -> None:
        conn, peer = server.accept()
        got.append(conn.recv(100) + b" from " + peer[0].encode())
        conn.close()

    t = threading.Thread(target=accept)
    t.start()
    port = server.getsockname()[1]
    mpremote(board.port, "resume", "exec",
             f"import socket\ns = socket.socket()\ns.connect(socket.getaddrinfo({netlab.HOST_ADDRESS!r}, {port})[0][-1])\n"
             "s.send(b'hello')\ns.close()")
    t.join(10)
    server.close()
    assert got == [b"hello from " + board.address.encode()]
    # cutting the link is a Wi-Fi outage for the firmware
    board.set_link(False)
    time.sleep(0.2)
    assert mpremote(board.port, "resume", "exec", "import network; print(network.WLAN().isconnected())").strip() == "False"
    board.set_link(True)
    time.sleep(0.2)
    assert mpremote(board.port, "resume", "exec", ASSOCIATED).strip() == "True"  # reassociated by itself


def test_without_namespaces_boards_fall_back_to_loopback_and_say_so(monkeypatch):
    monkeypatch.setenv("SBD_NO_NETNS", "1")
    board = EmulatedBoard("loopback-only")
    try:
        info = board.start()
        assert info["network"] == "loopback" and info["address"] == "127.0.0.1"
        assert info["weakened_by_loopback"], "the board must say which checks loopback weakens"
        assert mpremote(board.port, "resume", "exec", "print(1+1)").strip() == "2"
    finally:
        board.remove()


def test_board_code_cannot_reach_the_host(module_board):
    """The CPU is a host process; the ROM takes away the unix port's ways out."""
    out = mpremote(module_board.port, "resume", "exec",
                   "import os, vfs\nprint(hasattr(os, 'system'), hasattr(os, 'getenv'), hasattr(vfs, 'VfsPosix'))")
    assert out.split() == ["False", "False", "False"]


@pytest.mark.skipif(not netlab.namespaces_available(), reason="network namespaces need root")
def test_a_lease_left_by_a_killed_run_is_reclaimed(tmp_path):
    """A board whose supervisor died without stopping (a killed test run) gives its address back."""
    ghost = tmp_path / "ghost"
    ghost.mkdir()
    (ghost / "board.json").write_text("{}")
    (ghost / "status.json").write_text('{"supervisor_pid": 999999999}')
    host = netlab._lease(ghost)
    lease = netlab.LEASES / str(host)
    os.utime(lease, (time.time() - 120, time.time() - 120))  # older than a board's start-up
    try:
        assert netlab._lease(tmp_path / "next") == host
    finally:
        netlab.release(ghost)
        netlab.release(tmp_path / "next")


@pytest.mark.skipif(not netlab.namespaces_available(), reason="network namespaces need root")
def test_removing_a_stopped_board_spares_the_board_that_leased_its_address_since(make_board):
    """A stopped board's settings still name the namespace it had; once another board leases
    that address, removing the stopped one must not tear the other's network down."""
    old = make_board("old")
    old.stop()
    new = make_board("new")
    conf = old.conf
    conf["net"] = dict(new.conf["net"])  # as if `new` had been given the address `old` gave back
    old.state.save(conf)
    old.remove()
    namespaces = netlab._ip("netns", "list").stdout
    assert new.conf["net"]["netns"] in namespaces.split()
    assert netlab.holder(int(new.conf["net"]["netns"].rsplit("-", 1)[1])) == new.state.dir.resolve()


def test_nvs_handles_are_never_closed_and_outlive_a_soft_reset(make_board):
    """esp32.NVS(ns) is an nvs_open with no close (ports/esp32/esp32_nvs.c): each
    holds ESP-IDF heap until a hard reset, a soft reset included."""
    board = make_board()
    opener = ("import esp32\ntry:\n for i in range(%d): esp32.NVS('x')\nexcept OSError as e: print('ERR', e.args[0])\n"
              "else: print('OK')\n")
    assert mpremote(board.port, "resume", "exec", opener % 300).strip() == "OK"
    out = mpremote(board.port, "soft-reset", "exec", opener % 300).strip()
    assert out.splitlines()[-1] == "ERR 12", out  # ESP_ERR_NO_MEM, as check_esp_err maps it
    board.reset_and_wait("hard")
    assert mpremote(board.port, "resume", "exec", opener % 300).strip() == "OK"


def test_firmware_store_keeps_one_nvs_handle(make_board):
    """The firmware's store, called as its loops call it, does not run the board out of memory."""
    from sbd_harness.paths import REPO_ROOT
    board = make_board()
    mpremote(board.port, "resume", "fs", "cp", str(REPO_ROOT / "firmware/lib/sbd/store.py"), ":store.py")
    loop = ("import store, gc\ngc.collect(); free = gc.mem_free()\n"
            "for i in range(1500):\n store.put_int('n', i); store.get_int('n'); store.get('absent')\n"
            "gc.collect(); print('LOST', free - gc.mem_free())\n")
    out = mpremote(board.port, "resume", "exec", loop).strip()
    assert out.startswith("LOST") and int(out.split()[1]) < 2048, out



NVS_ON_A_FRAGMENTED_HEAP = """
import esp32, gc
n = esp32.NVS('x')
n.set_blob('big', bytes(3000))
gc.collect()
hold = [None] * 400
try:
    for i in range(len(hold)):
        hold[i] = bytearray(400)
except MemoryError:
    pass
for i in range(0, len(hold), 2):
    hold[i] = None
gc.collect()
try:
    n.set_blob('k', b'v')
    print('OK', gc.mem_free())
except MemoryError:
    print('MemoryError', gc.mem_free())
"""


def test_an_nvs_write_needs_no_block_of_micropythons_heap_the_stores_size(make_board):
    """On the chip an NVS write works in ESP-IDF's heap: a MicroPython heap left in
    holes of 400 bytes, with tens of KiB free, still takes a write to a 3 KiB store."""
    board = make_board()
    out = mpremote(board.port, "resume", "exec", NVS_ON_A_FRAGMENTED_HEAP).strip()
    assert out.startswith("OK"), out

def test_ticks_run_on_across_a_soft_reset_and_restart_at_a_hard_one(make_board):
    """ticks_ms is esp_timer time since boot (ports/esp32/mphalport.c): a soft reset does not restart it."""
    board = make_board()
    ticks = "import time; print(time.ticks_ms())"
    time.sleep(3)
    before = int(mpremote(board.port, "resume", "exec", ticks).strip())
    assert before >= 3000
    after = int(mpremote(board.port, "soft-reset", "exec", ticks).strip().splitlines()[-1])
    assert after >= before, (before, after)
    board.reset_and_wait("hard")
    assert int(mpremote(board.port, "resume", "exec", ticks).strip()) < before
