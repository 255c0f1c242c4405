"""ha-instancemonitor (see the package modules); depends only on the monitors core."""
