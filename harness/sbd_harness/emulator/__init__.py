"""The emulated ESP32 board: flash image, supervisor process, lab network."""
