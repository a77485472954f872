# boot.py: runs first at every boot and soft reset (before main.py).
# Announces the firmware on the console; later practices hook in here.
from sbd import boot_report

boot_report.announce()
