# rootfs/common.sh - shared by the rootfs recipes: the parts every build VM
# root file system has, whatever its profile.

# rootfs_base STAGING AGENT: directories, the agent, the build user.
rootfs_base () {
    local root=$1 agent=$2
    mkdir -p "$root"/{proc,sys,dev,tmp,run,work,buildvm,etc,root}
    chmod 1777 "$root/tmp"
    chmod 0700 "$root/root"
    install -m 0755 "$agent" "$root/buildvm/agent"
    # uid/gid 1000 is the unprivileged build user (AGENT_BUILD_UID in agent.h)
    if [ -f "$root/etc/passwd" ]; then
        sed -i '/^build:/d' "$root/etc/passwd" "$root/etc/group"
        [ -f "$root/etc/shadow" ] && sed -i '/^build:/d' "$root/etc/shadow"
    else
        echo "root:x:0:0:root:/root:/bin/sh" >"$root/etc/passwd"
        echo "root:x:0:" >"$root/etc/group"
    fi
    echo "build:x:1000:1000:build user:/work/home:/bin/sh" >>"$root/etc/passwd"
    echo "build:x:1000:" >>"$root/etc/group"
    [ -f "$root/etc/shadow" ] && echo "build:!:19000:0:99999:7:::" >>"$root/etc/shadow"
    echo "buildvm" >"$root/etc/hostname"
    printf '127.0.0.1 localhost buildvm\n::1 localhost\n' >"$root/etc/hosts"
    # no network in the VM: an empty resolv.conf makes lookups fail fast
    : >"$root/etc/resolv.conf"
}
