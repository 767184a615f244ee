EXP_PROBE = r'''#!/usr/bin/python3
import os, time, subprocess
def say(s):
    with open("/dev/ttyS0", "w") as f:
        f.write("PROBE " + s + "\n")
def attempt(fn):
    try:
        return str(fn()).strip().replace(" ", "_")[:40]
    except OSError as e:
        return "err%d" % e.errno
say("root_fstype=" + subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "/"], capture_output=True, text=True).stdout.strip())
held = os.open("/etc/node01-secret", os.O_RDONLY)
with open("/root/exp-before", "w") as f:
    f.write("before\n")
dirfd = os.open("/etc", os.O_RDONLY)
say("ready")
for i in range(45):
    r = {}
    r["held"] = attempt(lambda: os.pread(held, 40, 0).decode())
    r["path"] = attempt(lambda: open("/etc/node01-secret").read())
    r["before"] = attempt(lambda: open("/root/exp-before").read())
    r["ls_etc"] = attempt(lambda: len(os.listdir("/etc")))
    r["dirfd"] = attempt(lambda: len(os.listdir(dirfd)))
    def write():
        with open("/root/exp-%d" % i, "w") as f:
            f.write("x")
        return open("/root/exp-%d" % i).read()
    r["write"] = attempt(write)
    r["stat"] = attempt(lambda: os.stat("/etc/hostname").st_size)
    r["exec"] = attempt(lambda: subprocess.run(["/usr/local/sbin/oneroot-probe-helper"], capture_output=True, text=True).stdout or "ran")
    say("i=%d " % i + " ".join("%s=%s" % kv for kv in r.items()))
    time.sleep(4)
say("DONE")
subprocess.run(["systemctl", "poweroff"])
'''
HELPER = "#!/bin/sh\necho helper-ok\n"


def test_experiment_running_node(vmlab: VmServerLab) -> None:
    lab = vmlab
    junction = f"{VIEW}/var/state/systems/node01"
    line = next(li for li in lab.ssh(f"cat {EXPORTS}").stdout.splitlines()
                if li.startswith(junction + " "))
    client, options = line.split()[1].rstrip(")").split("(")
    unchecked = options.replace(",subtree_check", ",no_subtree_check")
    lab.put("node01", "/etc/node01-secret", NODE01_SECRET + "\n")
    lab.put("node01", "/usr/local/sbin/oneroot-probe-helper", HELPER, mode="0755")
    install_probe(lab, "node01", EXP_PROBE)
    lab.ssh(f"exportfs -i -o {unchecked} {client}:{junction}")
    print(lab.ssh("exportfs -v").stdout)
    vm = lab.boot("node01")
    vm.wait_for(r"PROBE i=3 ", timeout=BOOT_TIMEOUT, fail_on=NODE_FAILURES)
    print("flip at", vm.elapsed())
    lab.ssh(f"exportfs -i -o {options} {client}:{junction}")
    print(lab.ssh("exportfs -v").stdout)
    for _ in range(12):
        time.sleep(4)
        lab.ssh("sync; echo 2 > /proc/sys/vm/drop_caches")
        print("dropped at", vm.elapsed())
    vm.wait_for(r"PROBE DONE", timeout=400)
    vm.wait_powered_off(timeout=180)
    print("\n".join(li for li in vm.serial_text().splitlines() if "PROBE" in li))
    lab.ssh("exportfs -ra")
