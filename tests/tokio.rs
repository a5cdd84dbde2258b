//! The `tokio` feature's types (vdestack::tokio): under load, UDP, errors, and cancellation
//! (dropped futures leave no socket behind, in the engine or in the process). Each test
//! uses its own `mem://` segment; they run one at a time (SERIAL), since two of them count
//! the fds of the whole process.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;
use vdestack::tokio::{TcpListener, TcpStream, UdpSocket};
use vdestack::Stack;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A stack on `mem://tokio-NAME` with 10.0.0.N/24 on vde0.
fn stack_on(name: &str, host: u8) -> Stack {
    let s = Stack::new(&format!("mem://tokio-{name}"), None).expect("create stack");
    s.cmd(&format!(
        "ip link set vde0 up; ip addr add 10.0.0.{host}/24 dev vde0"
    ))
    .expect("configure stack");
    s
}

/// One thread: the fds it opens (its control connection) are there before a baseline.
fn one_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The bytes connection `i` sends: a pattern that differs per connection and per offset,
/// so that a byte from another connection or another place cannot pass for it.
fn pattern(i: usize, len: usize) -> Vec<u8> {
    let mut x = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// How many sockets the engine holds for `stack`: the engine binds its end of each socket's
/// pair to `@vds:<engine>:<id>`, an id of 8 bytes (little-endian) whose high half is the
/// stack's id, and /proc/net/unix lists those names (a zero byte shows as '@').
fn engine_socks(stack: &Stack) -> usize {
    let mut prefix = b"@".to_vec();
    prefix.extend_from_slice(stack.ctl().name());
    prefix.push(b':');
    let want: Vec<u8> = stack
        .id()
        .to_le_bytes()
        .iter()
        .map(|&b| if b == 0 { b'@' } else { b })
        .collect();
    let table = std::fs::read("/proc/net/unix").expect("read /proc/net/unix");
    let mut n = 0;
    let mut at = 0;
    while let Some(off) = find(&table[at..], &prefix) {
        let id = at + off + prefix.len();
        if table.get(id + 4..id + 8) == Some(&want[..]) {
            n += 1;
        }
        at = id;
    }
    n
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// The fds of the process once their count holds still for 100 ms (a test that just
/// ended may still be closing its thread's control connection).
fn steady_fds() -> usize {
    let mut last = open_fds();
    let mut since = Instant::now();
    let end = since + Duration::from_secs(5);
    while since.elapsed() < Duration::from_millis(100) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
        let n = open_fds();
        if n != last {
            (last, since) = (n, Instant::now());
        }
    }
    last
}

/// Waits (up to 5 s) until `f` gives at most `want`; returns the last value seen.
fn settles(want: usize, mut f: impl FnMut() -> usize) -> usize {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let v = f();
        if v <= want || Instant::now() > end {
            return v;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn two_hundred_connections_echo_a_mebibyte_each_on_one_runtime() {
    let _g = serial();
    // scripts/reliability.d/async runs it bigger.
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let conns = env("VDESTACK_TOKIO_CONNS", 200);
    let len = env("VDESTACK_TOKIO_BYTES", 1 << 20);
    let server_stack = stack_on("load", 1);
    let client_stack = stack_on("load", 2);
    let rt = runtime(2);
    let start = Instant::now();
    rt.block_on(async {
        let listener = TcpListener::bind(&server_stack, "10.0.0.1:7")
            .await
            .unwrap();
        let server = tokio::spawn(async move {
            for _ in 0..conns {
                let (mut conn, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut rd, mut wr) = conn.split();
                    tokio::io::copy(&mut rd, &mut wr).await.unwrap();
                    wr.shutdown().await.unwrap();
                });
            }
        });
        // Progress, for the watchdog: bytes echoed back, connections done.
        let echoed = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let clients: Vec<_> = (0..conns)
            .map(|i| {
                let stack = Stack::attach(client_stack.ctl().clone(), client_stack.id());
                let (echoed, done) = (echoed.clone(), done.clone());
                tokio::spawn(async move {
                    let conn = TcpStream::connect(&stack, "10.0.0.1:7").await.unwrap();
                    let data = pattern(i, len);
                    let (mut rd, mut wr) = conn.into_split();
                    let sent = data.clone();
                    let writer = tokio::spawn(async move {
                        wr.write_all(&sent).await.unwrap();
                        wr.shutdown().await.unwrap();
                    });
                    let mut got = vec![0u8; len + 1];
                    let mut n = 0;
                    loop {
                        let k = rd.read(&mut got[n..]).await.unwrap();
                        if k == 0 {
                            break;
                        }
                        n += k;
                        echoed.fetch_add(k, Relaxed);
                    }
                    writer.await.unwrap();
                    assert!(got[..n] == data, "connection {i}: echo differs");
                    done.fetch_add(1, Relaxed);
                    n
                })
            })
            .collect();
        let all = async {
            let mut total = 0;
            for c in clients {
                total += c.await.unwrap();
            }
            total
        };
        // A stall fails the test with what it saw, instead of hanging it.
        let watchdog = async {
            let (mut last, mut since) = (0, Instant::now());
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let now = echoed.load(Relaxed);
                if now != last {
                    (last, since) = (now, Instant::now());
                } else if since.elapsed() > Duration::from_secs(30) {
                    panic!(
                        "stalled 30 s: {} of {conns} connections done, {now} of {} bytes echoed",
                        done.load(Relaxed),
                        conns * len
                    );
                }
            }
        };
        let total = tokio::select! {
            t = all => t,
            _ = watchdog => unreachable!(),
        };
        server.await.unwrap();
        assert_eq!(total, conns * len);
    });
    let t = start.elapsed();
    println!(
        "{conns} connections x {} KiB echoed in {t:.2?} ({:.0} MiB/s each way)",
        len >> 10,
        (conns * len) as f64 / (1 << 20) as f64 / t.as_secs_f64()
    );
}

#[test]
fn udp_send_to_and_recv_from_between_stacks() {
    let _g = serial();
    let a = stack_on("udp", 1);
    let b = stack_on("udp", 2);
    runtime(1).block_on(async {
        let server = UdpSocket::bind(&a, "10.0.0.1:5353").await.unwrap();
        let client = UdpSocket::bind(&b, "0.0.0.0:0").await.unwrap();
        let me: SocketAddr = format!("10.0.0.2:{}", client.local_addr().unwrap().port())
            .parse()
            .unwrap();
        let echo = tokio::spawn(async move {
            let mut buf = vec![0u8; 2000];
            for _ in 0..100 {
                let (n, from) = server.recv_from(&mut buf).await.unwrap();
                assert_eq!(from, me);
                server.send_to(&buf[..n], from).await.unwrap();
            }
        });
        let mut buf = vec![0u8; 2000];
        for i in 0..100usize {
            let msg = pattern(i, 1 + i * 14);
            client.send_to(&msg, "10.0.0.1:5353").await.unwrap();
            let (n, from) = timeout(Duration::from_secs(5), client.recv_from(&mut buf))
                .await
                .expect("echo within 5 s")
                .unwrap();
            assert_eq!(from, "10.0.0.1:5353".parse().unwrap());
            assert_eq!(&buf[..n], &msg[..], "datagram {i}");
        }
        echo.await.unwrap();

        // Connected: send/recv, and the peer's address.
        let c = UdpSocket::bind(&b, "10.0.0.2:6000").await.unwrap();
        let s = UdpSocket::bind(&a, "10.0.0.1:6001").await.unwrap();
        c.connect("10.0.0.1:6001").await.unwrap();
        assert_eq!(c.peer_addr().unwrap(), "10.0.0.1:6001".parse().unwrap());
        c.send(b"connected").await.unwrap();
        let (n, from) = s.recv_from(&mut buf).await.unwrap();
        assert_eq!(
            (&buf[..n], from),
            (&b"connected"[..], "10.0.0.2:6000".parse().unwrap())
        );
        s.send_to(b"back", from).await.unwrap();
        let n = c.recv(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"back");
    });
}

#[test]
fn connect_to_a_closed_port_is_refused() {
    let _g = serial();
    let a = stack_on("refused", 1);
    let b = stack_on("refused", 2);
    runtime(1).block_on(async {
        for (stack, to) in [(&b, "10.0.0.1:9"), (&a, "127.0.0.1:9")] {
            let e = timeout(Duration::from_secs(5), TcpStream::connect(stack, to))
                .await
                .expect("answer within 5 s")
                .unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED), "{to}: {e}");
        }
    });
    // Nothing is left of the refused sockets.
    assert_eq!(settles(0, || engine_socks(&b)), 0);
}

#[test]
fn a_pending_connect_does_not_block_the_runtime() {
    let _g = serial();
    let a = stack_on("noblock", 1);
    // One thread: a connect that blocked it would stop the ticker too.
    let rt = one_thread();
    rt.block_on(async {
        let ticks = tokio::spawn(async {
            let mut n = 0;
            let mut every = tokio::time::interval(Duration::from_millis(10));
            let end = tokio::time::Instant::now() + Duration::from_millis(300);
            while tokio::time::Instant::now() < end {
                every.tick().await;
                n += 1;
            }
            n
        });
        // 10.0.0.99 does not exist: ARP gets no answer and the attempt lasts (SYN retries).
        let r = timeout(
            Duration::from_millis(300),
            TcpStream::connect(&a, "10.0.0.99:80"),
        )
        .await;
        assert!(r.is_err(), "connect to nobody ended: {r:?}");
        let n = ticks.await.unwrap();
        assert!(
            n >= 20,
            "the ticker ran {n} times in 300 ms while connect waited"
        );
    });
}

#[test]
fn a_dropped_connect_future_leaves_no_socket() {
    let _g = serial();
    let a = stack_on("dropconn", 1);
    let rt = one_thread();
    // Warm up: the runtime's thread opens its control connection and the reactor its fds.
    // (With TCP: the engine does not see a UDP socket closed, see docs/reliability.md.)
    rt.block_on(async { drop(TcpListener::bind(&a, "10.0.0.1:0").await.unwrap()) });
    let fds = steady_fds();
    assert_eq!(
        settles(0, || engine_socks(&a)),
        0,
        "engine sockets at start"
    );
    rt.block_on(async {
        // 50 attempts at a host that does not answer, all dropped while in progress.
        let mut set = tokio::task::JoinSet::new();
        for i in 0..50 {
            let stack = Stack::attach(a.ctl().clone(), a.id());
            set.spawn(async move {
                let to = format!("10.0.0.{}:80", 100 + i);
                timeout(Duration::from_millis(100), TcpStream::connect(&stack, to))
                    .await
                    .is_err()
            });
        }
        while let Some(r) = set.join_next().await {
            assert!(r.unwrap(), "a connect to nobody ended");
        }
    });
    assert_eq!(settles(0, || engine_socks(&a)), 0, "engine sockets left");
    let now = settles(fds, open_fds);
    assert!(now <= fds, "fds of the process: {now}, {fds} before");
    // The stack still works.
    rt.block_on(async {
        let l = TcpListener::bind(&a, "10.0.0.1:80").await.unwrap();
        let _c = TcpStream::connect(&a, "10.0.0.1:80").await.unwrap();
        l.accept().await.unwrap();
    });
}

#[test]
fn a_dropped_accept_future_loses_no_connection() {
    let _g = serial();
    let a = stack_on("dropaccept", 1);
    let b = stack_on("dropaccept", 2);
    let rt = one_thread();
    rt.block_on(async { drop(TcpListener::bind(&a, "10.0.0.1:0").await.unwrap()) });
    let fds = steady_fds();
    rt.block_on(async {
        let l = TcpListener::bind(&a, "10.0.0.1:80").await.unwrap();
        for _ in 0..20 {
            assert!(timeout(Duration::from_millis(5), l.accept()).await.is_err());
        }
        // The next connection still comes, whole.
        let mut c = TcpStream::connect(&b, "10.0.0.1:80").await.unwrap();
        c.write_all(b"after").await.unwrap();
        let (mut s, peer) = timeout(Duration::from_secs(5), l.accept())
            .await
            .expect("accept within 5 s")
            .unwrap();
        assert_eq!(peer, c.local_addr().unwrap());
        let mut buf = [0; 5];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"after");
        // Accepts dropped while connections race in take none of them away: each one is
        // accepted exactly once.
        let mut clients = Vec::new();
        let mut accepted = 0;
        for _ in 0..10 {
            let stack = Stack::attach(b.ctl().clone(), b.id());
            let conn = tokio::spawn(async move { TcpStream::connect(&stack, "10.0.0.1:80").await });
            for _ in 0..3 {
                if let Ok(r) = timeout(Duration::from_micros(200), l.accept()).await {
                    r.unwrap();
                    accepted += 1;
                }
            }
            clients.push(conn.await.unwrap().unwrap());
        }
        while accepted < 10 {
            timeout(Duration::from_secs(5), l.accept())
                .await
                .expect("accept within 5 s")
                .unwrap();
            accepted += 1;
        }
        assert!(timeout(Duration::from_millis(50), l.accept())
            .await
            .is_err());
        let e = TcpListener::bind(&a, "10.0.0.1:80").await.unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EADDRINUSE));
        drop((l, c, s, clients));
        // The port is free again once the listener is gone.
        drop(TcpListener::bind(&a, "10.0.0.1:80").await.unwrap());
    });
    assert_eq!(settles(0, || engine_socks(&a)), 0, "engine sockets left");
    let now = settles(fds, open_fds);
    assert!(now <= fds, "fds of the process: {now}, {fds} before");
}

#[test]
fn conversions_halves_and_shutdown() {
    let _g = serial();
    let a = stack_on("conv", 1);
    let b = stack_on("conv", 2);
    runtime(1).block_on(async {
        // std -> tokio -> std, both ways.
        let l = vdestack::net::TcpListener::bind(&a, "10.0.0.1:80").unwrap();
        let l = TcpListener::try_from(l).unwrap();
        let c = TcpStream::connect(&b, "10.0.0.1:80").await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        let l = l.into_std().unwrap();
        assert_eq!(l.local_addr().unwrap(), "10.0.0.1:80".parse().unwrap());
        let mut std_s = s.into_std().unwrap();
        std_s.set_nonblocking(false).unwrap();
        c.set_nodelay(true).unwrap();
        assert!(c.nodelay().unwrap());

        // Owned halves: reunite; a dropped write half sends FIN.
        let (rd, wr) = c.into_split();
        let c2 = TcpStream::connect(&b, "10.0.0.1:80").await.unwrap();
        let (rd2, wr2) = c2.into_split();
        let e = rd.reunite(wr2).unwrap_err();
        let (rd, wr2) = (e.0, e.1);
        let c = rd.reunite(wr).unwrap();
        drop((rd2, wr2));
        let (mut rd, mut wr) = c.into_split();
        wr.write_all(b"half").await.unwrap();
        drop(wr);
        let got = tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut v = Vec::new();
            std_s.read_to_end(&mut v).unwrap();
            std_s.write_all(b"reply").unwrap();
            v
        })
        .await
        .unwrap();
        assert_eq!(got, b"half");
        let mut back = [0; 5];
        rd.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"reply");
    });
}

#[test]
fn peek_and_try_read_write() -> io::Result<()> {
    let _g = serial();
    let a = stack_on("peek", 1);
    runtime(1).block_on(async {
        let l = TcpListener::bind(&a, "127.0.0.1:80").await?;
        let c = TcpStream::connect(&a, "127.0.0.1:80").await?;
        let (s, _) = l.accept().await?;
        c.writable().await?;
        assert_eq!(c.try_write(b"peekaboo")?, 8);
        let mut buf = [0; 8];
        let n = s.peek(&mut buf).await?;
        assert_eq!(&buf[..n], &b"peekaboo"[..n]);
        let mut got = Vec::new();
        while got.len() < 8 {
            s.readable().await?;
            match s.try_read(&mut buf) {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        assert_eq!(got, b"peekaboo");
        Ok(())
    })
}
