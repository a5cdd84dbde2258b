//! "Internet of Threads": many threads, each with its own IP stack and address on one
//! `mem://` segment and its own tokio runtime, serving and calling each other.
//!
//! Each node listens on port 7 and answers a line with a line; each calls the next CALLS
//! nodes of the ring (a new connection per call) and checks the answers; all stay up until
//! every node is done. Then a summary.
//!
//!     cargo run --release --features tokio --example iot_threads [NODES [CALLS]]

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Barrier;
use vdestack::tokio::{TcpListener, TcpStream};
use vdestack::Stack;

fn addr(node: usize) -> String {
    format!("10.9.{}.{}", node / 250, node % 250 + 1)
}

/// What one node saw as a caller.
#[derive(Default)]
struct Calls {
    ok: usize,
    failed: Vec<String>,
    latency: Vec<Duration>,
}

/// Answers each line with who answered and what was asked.
async fn serve(listener: TcpListener, me: String) {
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            return;
        };
        let me = me.clone();
        tokio::spawn(async move {
            let (rd, mut wr) = conn.into_split();
            let mut lines = BufReader::new(rd).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let reply = format!("{me} heard: {line}\n");
                if wr.write_all(reply.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

async fn call(stack: &Stack, me: &str, to: &str) -> std::io::Result<String> {
    let conn = TcpStream::connect(stack, format!("{to}:7")).await?;
    let (rd, mut wr) = conn.into_split();
    wr.write_all(format!("hello from {me}\n").as_bytes())
        .await?;
    let mut reply = String::new();
    BufReader::new(rd).read_line(&mut reply).await?;
    Ok(reply)
}

/// One node: its stack, its runtime, its server and its calls.
fn node(i: usize, nodes: usize, calls: usize, ready: Arc<Barrier>, done: Arc<Barrier>) -> Calls {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let me = addr(i);
        let stack = Stack::new("mem://iot", None).expect("stack");
        stack
            .cmd(&format!(
                "ip link set vde0 up; ip addr add {me}/16 dev vde0"
            ))
            .expect("configure");
        let listener = TcpListener::bind(&stack, format!("{me}:7"))
            .await
            .expect("listen");
        let server = tokio::spawn(serve(listener, me.clone()));
        ready.wait().await;
        let mut seen = Calls::default();
        for k in 1..=calls {
            let to = addr((i + k) % nodes);
            let t = Instant::now();
            match tokio::time::timeout(Duration::from_secs(10), call(&stack, &me, &to)).await {
                Ok(Ok(reply)) if reply == format!("{to} heard: hello from {me}\n") => {
                    seen.ok += 1;
                    seen.latency.push(t.elapsed());
                }
                Ok(Ok(reply)) => seen.failed.push(format!("{me} -> {to}: reply {reply:?}")),
                Ok(Err(e)) => seen.failed.push(format!("{me} -> {to}: {e}")),
                Err(_) => seen.failed.push(format!("{me} -> {to}: no reply in 10 s")),
            }
        }
        // Keep serving until everyone has made their calls.
        done.wait().await;
        server.abort();
        seen
    })
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let nodes: usize = args.next().map_or(Ok(64), |a| a.parse())?;
    let calls: usize = args.next().map_or(Ok(8), |a| a.parse())?;
    anyhow::ensure!(
        (2..=60_000).contains(&nodes) && calls < nodes,
        "NODES in 2..=60000, CALLS < NODES"
    );
    let ready = Arc::new(Barrier::new(nodes));
    let done = Arc::new(Barrier::new(nodes));
    let start = Instant::now();
    let threads: Vec<_> = (0..nodes)
        .map(|i| {
            let (ready, done) = (ready.clone(), done.clone());
            std::thread::Builder::new()
                .name(format!("node{i}"))
                .spawn(move || node(i, nodes, calls, ready, done))
        })
        .collect::<Result<_, _>>()?;
    let mut ok = 0;
    let mut failed = Vec::new();
    let mut latency = Vec::new();
    for t in threads {
        let c = t.join().map_err(|_| anyhow::anyhow!("a node panicked"))?;
        ok += c.ok;
        failed.extend(c.failed);
        latency.extend(c.latency);
    }
    let elapsed = start.elapsed();
    latency.sort();
    let pct = |p: usize| {
        latency
            .get(latency.len() * p / 100)
            .copied()
            .unwrap_or_default()
    };
    println!("{nodes} threads, each with its own stack on mem://iot and its own tokio runtime");
    println!(
        "calls: {ok} of {} answered correctly, {} failed, in {elapsed:.2?}",
        nodes * calls,
        failed.len()
    );
    println!(
        "call latency (connect, request, reply): median {:.2?}, p99 {:.2?}, max {:.2?}",
        pct(50),
        pct(99),
        latency.last().copied().unwrap_or_default()
    );
    for f in failed.iter().take(10) {
        println!("  {f}");
    }
    anyhow::ensure!(failed.is_empty(), "{} calls failed", failed.len());
    Ok(())
}
