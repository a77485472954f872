# Security-by-design reference firmware for ESP32 (MicroPython).
# One module per practice; each names the baseline provisions it implements.
