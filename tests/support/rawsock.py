"""Socket calls made as raw syscalls (ctypes' syscall()), past the C library and so past
LD_PRELOAD: what a static or Go program does. For tests/seal.rs.

rawsock.py connect PORT         socket(2) + connect(2) to 127.0.0.1:PORT, then a send
rawsock.py families             socket(2) of families that reach a network, io_uring_setup
rawsock.py forkserver PORT N    a server that forks a child per connection (N of them)
rawsock.py client PORT MSG      connects, sends MSG, prints the answer
rawsock.py threads              blocking accepts and connects in threads at once
rawsock.py signal               a signal interrupts a blocking accept; the next gets the
                                connection that came after
"""
import ctypes
import os
import signal
import socket
import struct
import sys
import threading

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
L = ctypes.c_long

SYS = {"socket": 41, "connect": 42, "accept": 43, "sendto": 44, "recvfrom": 45,
       "bind": 49, "listen": 50, "getsockname": 51, "accept4": 288, "io_uring_setup": 425}


def sc(name, *args):
    conv = [L(a) if isinstance(a, int) else ctypes.c_void_p(None) if a is None else a
            for a in args]
    r = libc.syscall(L(SYS[name]), *conv)
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r


def sin(port, ip="127.0.0.1"):
    b = struct.pack("<HH4s8x", socket.AF_INET, socket.htons(port), socket.inet_aton(ip))
    return ctypes.create_string_buffer(b, len(b))


def tcp():
    return sc("socket", socket.AF_INET, socket.SOCK_STREAM, 0)


def connect(fd, port):
    sa = sin(port)
    sc("connect", fd, sa, 16)


def send(fd, data):
    return sc("sendto", fd, ctypes.c_char_p(data), len(data), 0, None, 0)


def recv(fd, n=4096):
    buf = ctypes.create_string_buffer(n)
    got = sc("recvfrom", fd, buf, n, 0, None, None)
    return buf.raw[:got]


def listener(port):
    fd = tcp()
    sc("bind", fd, sin(port), 16)
    sc("listen", fd, 16)
    return fd


def accept(fd):
    sa = ctypes.create_string_buffer(128)
    ln = ctypes.c_uint32(128)
    c = sc("accept4", fd, sa, ctypes.byref(ln), 0)
    port, ip = struct.unpack("!H4s", sa.raw[2:8])
    return c, (socket.inet_ntoa(ip), port, ln.value)


def main():
    cmd = sys.argv[1]
    if cmd == "connect":
        fd = tcp()
        print("raw socket: fd", fd, flush=True)
        try:
            connect(fd, int(sys.argv[2]))
        except OSError as e:
            print("raw connect:", e.strerror, flush=True)
            return
        print("raw connect: connected; sent", send(fd, b"raw-hello\n"), flush=True)
    elif cmd == "families":
        for fam, ty, proto, name in [(17, 3, 0x300, "packet"), (16, 3, 0, "netlink"),
                                     (40, 1, 0, "vsock"), (2, 3, 1, "raw inet")]:
            try:
                sc("socket", fam, ty, proto)
                print(name + ": made", flush=True)
            except OSError as e:
                print(name + ":", e.strerror, flush=True)
        params = ctypes.create_string_buffer(120)
        try:
            sc("io_uring_setup", 8, params)
            print("io_uring: made", flush=True)
        except OSError as e:
            print("io_uring:", e.strerror, flush=True)
    elif cmd == "forkserver":
        lfd = listener(int(sys.argv[2]))
        print("forkserver: listening", flush=True)
        kids = []
        for _ in range(int(sys.argv[3])):
            c, peer = accept(lfd)
            pid = os.fork()
            if pid == 0:
                msg = recv(c)
                send(c, b"child %d got %s" % (os.getpid(), msg.strip()))
                os._exit(0)
            os.close(c)
            kids.append(pid)
        for k in kids:
            _, st = os.waitpid(k, 0)
            print("forkserver: child exit", os.waitstatus_to_exitcode(st), flush=True)
    elif cmd == "client":
        fd = tcp()
        for _ in range(100):
            try:
                connect(fd, int(sys.argv[2]))
                break
            except OSError as e:
                if e.errno != 111:
                    raise
                os.close(fd)
                fd = tcp()
                threading.Event().wait(0.05)
        send(fd, sys.argv[3].encode())
        print("client: answer", recv(fd).decode(), flush=True)
    elif cmd == "threads":
        l1, l2 = listener(7101), listener(7102)
        got = {}

        def taker(name, lfd):
            c, peer = accept(lfd)
            got[name] = recv(c).decode()

        t1 = threading.Thread(target=taker, args=("first", l1))
        t2 = threading.Thread(target=taker, args=("second", l2))
        t1.start()
        t2.start()
        threading.Event().wait(0.3)  # both wait in accept now
        c2 = tcp()
        connect(c2, 7102)  # the second listener's accept returns while the first waits
        send(c2, b"to second")
        t2.join(10)
        print("threads: second accepted while first waits:", got.get("second"),
              "first still waiting:", t1.is_alive(), flush=True)
        c1 = tcp()
        connect(c1, 7101)
        send(c1, b"to first")
        t1.join(10)
        print("threads: first got:", got.get("first"), flush=True)
    elif cmd == "signal":
        signal.signal(signal.SIGALRM, lambda *a: None)
        lfd = listener(7300)
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        try:
            accept(lfd)
            print("signal: accept returned", flush=True)
        except OSError as e:
            print("signal: accept:", e.strerror, flush=True)
        pid = os.fork()
        if pid == 0:
            threading.Event().wait(0.3)  # after the interrupted accept's worker has looked
            c = tcp()
            connect(c, 7300)
            send(c, b"after the signal")
            os._exit(0)
        c, _ = accept(lfd)
        print("signal: next accept got:", recv(c).decode(), flush=True)
        os.waitpid(pid, 0)


main()
