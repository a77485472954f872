# Broken variant: the firmware no longer announces itself at boot.
