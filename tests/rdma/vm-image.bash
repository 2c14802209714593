# shellcheck shell=bash
# vm-image.bash — sourced by tests/rdma/vm.sh: builds the initramfs of the
# Soft-RoCE VM and boots it. Uses vm.sh's die, fetch_and_extract, HERE,
# VMDIR, KVER, MODULES, BINS, RUN_CMD, ADD_FILES, TIMEOUT, CPUS.
#
# The image is merged-/usr like Debian (bin, sbin, lib, lib64 are links into
# usr/), so a library ldd found at /lib/x86_64-linux-gnu lands in
# usr/lib/x86_64-linux-gnu.

# image_path PATH: where a file of the staged tree or of the host goes in
# the image (relative, merged-/usr).
image_path() {
    local p=${1#/}
    case $p in
    lib/* | lib64/* | bin/* | sbin/*) p=usr/$p ;;
    esac
    echo "$p"
}

# copy_closure DEST STAGE FILE IMAGEPATH: copies FILE to DEST/IMAGEPATH and
# every shared library ldd resolves for it, preferring the staged packages
# (STAGE) and else the host's (same Debian release).
copy_closure() {
    local dest=$1 stage=$2 file=$3 at=$4 libs lib rel
    mkdir -p "$dest/$(dirname "$at")"
    cp -L "$file" "$dest/$at"
    libs=$(LD_LIBRARY_PATH="$stage/lib/x86_64-linux-gnu:$stage/usr/lib/x86_64-linux-gnu" \
        ldd "$file" 2>&1) || return 0 # not dynamic (a script, a static binary)
    if grep -q 'not found' <<<"$libs"; then
        die "ldd closure of $file: $(grep 'not found' <<<"$libs" | tr -s ' \t' ' ')"
    fi
    while read -r lib; do
        [ -n "$lib" ] || continue
        case $lib in
        "$stage"/*) rel=$(image_path "${lib#"$stage"}") ;;
        *) rel=$(image_path "$lib") ;;
        esac
        [ -e "$dest/$rel" ] && continue
        mkdir -p "$dest/$(dirname "$rel")"
        cp -L "$lib" "$dest/$rel"
    done < <(sed -n -e 's/.*=> \(\/[^ ]*\) (0x.*/\1/p' -e 's/^[[:space:]]*\(\/[^ ]*\) (0x.*/\1/p' <<<"$libs")
}

# module_order MODDIR NAME...: the .ko paths (relative to MODDIR) to insmod
# so that each module comes after what its depends= names. A module that is
# not there as a file is built into the kernel (modules.builtin) or missing.
module_order() {
    local moddir=$1 name
    shift
    declare -A seen=()
    _mod_visit() {
        local n=$1 ko dep
        [ -n "${seen[$n]:-}" ] && return 0
        seen[$n]=1
        ko=$(cd "$moddir" && find kernel -name "$n.ko" -o -name "${n//_/-}.ko" | head -n 1)
        if [ -z "$ko" ]; then
            grep -qE "/(${n}|${n//_/-})\.ko$" "$moddir/modules.builtin" 2>/dev/null ||
                die "kernel module $n is neither a file nor built in under $moddir"
            return 0
        fi
        for dep in $(objcopy -O binary -j .modinfo "$moddir/$ko" /dev/stdout |
            tr '\0' '\n' | sed -n 's/^depends=//p' | tr ',' ' '); do
            _mod_visit "$dep"
        done
        echo "$ko"
    }
    for name in "$@"; do _mod_visit "$name"; done
}

# pack DIR OUT: DIR as a gzip'd newc cpio (the kernel's initramfs format),
# written with the image's own static busybox.
pack() {
    local dir=$1 out=$2
    (cd "$dir" && find . -mindepth 1 | LC_ALL=C sort |
        "$IMGBUSYBOX" cpio -o -H newc 2>/dev/null) | gzip -1 >"$out"
}

# build_image IMG PKG=VER...: fetches and extracts the packages, assembles
# the root (busybox, verbs tools and providers with their libraries, the rxe
# modules, /init) and writes IMG/vmlinuz and IMG/base.cpio.gz.
build_image() {
    local img=$1 stage root moddir order ko b
    shift
    stage=$img/stage root=$img/root
    rm -rf "$stage" "$root"
    mkdir -p "$root/usr/bin" "$root/usr/sbin" "$root/usr/lib64" "$root/etc"
    fetch_and_extract "$stage" "$@"
    for b in bin sbin lib lib64; do
        ln -s "usr/$b" "$root/$b" 2>/dev/null || true
    done
    cp "$stage/bin/busybox" "$root/usr/bin/busybox"
    ln -s busybox "$root/usr/bin/sh" # /init's interpreter, before --install
    copy_closure "$root" "$stage" "$stage/sbin/ip" usr/sbin/ip
    for b in $BINS; do
        copy_closure "$root" "$stage" "$stage/$b" "$b"
    done
    cp -r "$stage/etc/libibverbs.d" "$root/etc/"
    for b in "$stage"/usr/lib/x86_64-linux-gnu/libibverbs/*.so; do
        copy_closure "$root" "$stage" "$b" "${b#"$stage"/}"
    done
    # glibc loads libgcc_s at run time (pthread_cancel, unwinding): ldd misses it.
    copy_closure "$root" "$stage" "$stage/lib/x86_64-linux-gnu/libgcc_s.so.1" \
        usr/lib/x86_64-linux-gnu/libgcc_s.so.1
    moddir=$stage/lib/modules/$KVER
    : >"$root/etc/wren-modules"
    # An assignment, so that module_order's die stops the build (set -e).
    # shellcheck disable=SC2086 # MODULES is a list of names
    order=$(module_order "$moddir" $MODULES)
    for ko in $order; do
        mkdir -p "$root/usr/lib/modules/$(dirname "$ko")"
        cp "$moddir/$ko" "$root/usr/lib/modules/$ko"
        echo "/lib/modules/$ko" >>"$root/etc/wren-modules"
    done
    install -m 0755 "$HERE/init.sh" "$root/init"
    install -m 0755 "$HERE/verbs-test.sh" "$root/usr/bin/wren-verbs-test"
    install -m 0755 "$HERE/ib-write-bw.sh" "$root/usr/bin/wren-ib-write-bw"
    cp "$stage/boot/vmlinuz-$KVER" "$img/vmlinuz"
    cp "$stage/bin/busybox" "$img/busybox"
    IMGBUSYBOX=$root/usr/bin/busybox pack "$root" "$img/base.cpio.gz.tmp"
    mv "$img/base.cpio.gz.tmp" "$img/base.cpio.gz"
    rm -rf "$stage" "$root"
}

# overlay IMG DIR: the per-run layer (the test command and --add files),
# packed as DIR.cpio.gz; the kernel unpacks it over the base.
overlay() {
    local img=$1 dir=$2 f
    rm -rf "$dir"
    mkdir -p "$dir/etc"
    if [ -n "$RUN_CMD" ]; then
        printf '%s\n' "$RUN_CMD" >"$dir/etc/wren-test.sh"
    else
        echo "exec /usr/bin/wren-verbs-test" >"$dir/etc/wren-test.sh"
    fi
    for f in "${ADD_FILES[@]+"${ADD_FILES[@]}"}"; do
        [ -f "$f" ] || die "--add $f: no such file"
        f=$(realpath "$f")
        copy_closure "$dir" /nonexistent "$f" "${f#/}"
    done
    # The base's static busybox packs it (no cpio needed on the host).
    IMGBUSYBOX=$img/busybox pack "$dir" "$dir.cpio.gz"
}

# run_vm IMG: boots IMG's kernel with base + a per-run overlay under qemu
# (TCG) within TIMEOUT seconds; the console goes to stdout and
# $VMDIR/console.log, without the firmware's terminal resets and colours. Exits with the test's code (0 passed), 124 on the
# timeout, 2 when the VM ended without a result line.
run_vm() {
    local img=$1 ov=$VMDIR/run.$$ rc code t0 log=$VMDIR/console.log
    # shellcheck disable=SC2064 # ov is fixed now
    trap "rm -rf '$ov' '$ov.cpio.gz' '$ov.initrd'" EXIT
    overlay "$img" "$ov"
    cat "$img/base.cpio.gz" "$ov.cpio.gz" >"$ov.initrd"
    t0=$(date +%s%N)
    set +e
    timeout "$TIMEOUT" qemu-system-x86_64 -m 1024 -cpu max -smp "$CPUS" -nographic -no-reboot -nic none \
        -kernel "$img/vmlinuz" -initrd "$ov.initrd" \
        -append "console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init" \
        -device isa-debug-exit,iobase=0xf4,iosize=0x04 </dev/null 2>&1 |
        sed -u -e 's/\x1b\[[0-9;?]*[a-zA-Z]//g' -e 's/\x1b[a-zA-Z]//g' -e 's/\r$//' | tee "$log"
    rc=${PIPESTATUS[0]}
    set -e
    echo "vm.sh: qemu exited $rc after $((($(date +%s%N) - t0) / 1000000)) ms (console: $log)"
    if [ "$rc" -eq 124 ]; then
        echo "vm.sh: FAILED: the VM did not finish within $TIMEOUT s" >&2
        exit 124
    fi
    # isa-debug-exit: status (code << 1) | 1; the result line confirms that
    # /init wrote it (qemu's own errors exit 1 too).
    code=$((rc >> 1))
    if [ $((rc & 1)) -ne 1 ] || ! grep -q "^wren-vm: result $code" "$log"; then
        echo "vm.sh: FAILED: the VM ended without a result (qemu status $rc)" >&2
        exit 2
    fi
    if [ "$code" -ne 0 ]; then
        echo "vm.sh: FAILED: the test in the VM exited $code" >&2
        exit "$code"
    fi
    echo "vm.sh: passed"
}
