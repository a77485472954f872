# Runs at every boot: factory-reset button, identity, the boot line, and
# whether the console stays open.
from sbd import boot_report, console, factory_reset, identity, state


def run():
    if factory_reset.button_held():
        factory_reset.erase_and_reset()
    identity.ensure_keypair()
    boot_report.announce(state.summary())
    if not state.locked():
        console.open()
