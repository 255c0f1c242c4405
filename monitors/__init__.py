"""The shared core of compute-ha-monitors: config, notification, outbox, delivery, drivers,
service runtime, logging and the operator CLI. Knows nothing of libvirt, netlink or
Pacemaker."""
