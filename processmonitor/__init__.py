"""ha-processmonitor (see the package modules); depends only on the monitors core."""
