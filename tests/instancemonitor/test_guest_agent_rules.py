"""The heartbeat's counting rules (threshold, once, re-arm) and channel discovery."""
from instancemonitor.guest_agent import Heartbeat, agent_socket


def test_threshold_once_and_rearm():
    hb = Heartbeat(threshold=3)
    assert [hb.record("u", False) for _ in range(5)] == [False, False, True, False, False]
    assert hb.record("u", True) is False  # answers again: re-armed
    assert [hb.record("u", False) for _ in range(3)] == [False, False, True]
    hb.forget_except(set(), set())
    assert hb.failures == {} and hb.sent == set()


def test_a_restart_keeps_the_report_until_the_agent_answers():
    """Stopped and started again (the engine's recovery), still silent: counted again
    from zero while it runs, never reported a second time; an answer re-arms it."""
    hb = Heartbeat(threshold=2)
    assert [hb.record("u", False) for _ in range(2)] == [False, True]
    hb.forget_except(set(), {"u"})              # a round while it is stopped
    assert hb.failures == {} and hb.sent == {"u"}
    assert [hb.record("u", False) for _ in range(4)] == [False] * 4
    assert hb.record("u", True) is False
    assert [hb.record("u", False) for _ in range(2)] == [False, True]
    hb.forget_except(set(), set())              # undefined: forgotten
    assert hb.sent == set()


def test_agent_socket_from_domain_xml():
    xml = """<domain><devices><channel type='unix'><source mode='bind'
      path='/var/lib/libvirt/qemu/org.qemu.guest_agent.0.instance-0001.sock'/>
      <target type='virtio' name='org.qemu.guest_agent.0'/></channel></devices></domain>"""
    assert agent_socket(xml).endswith("instance-0001.sock")
    assert agent_socket("<domain><devices/></domain>") is None
    assert agent_socket("not xml") is None
