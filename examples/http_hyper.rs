//! An HTTP server and client, each on its own stack on a `mem://` segment, with hyper 1.x:
//! the only glue is the stream type, wrapped in hyper-util's `TokioIo` as tokio's would be.
//!
//!     cargo run --release --features tokio --example http_hyper

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use vdestack::tokio::{TcpListener, TcpStream};
use vdestack::Stack;

/// GET / says hello with the caller's address; POST /echo sends the body back.
async fn handle(
    req: Request<Incoming>,
    peer: std::net::SocketAddr,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let resp = match (req.method(), req.uri().path()) {
        (&Method::GET, "/") => Response::new(Full::from(format!("hello, {peer}\n"))),
        (&Method::POST, "/echo") => {
            Response::new(Full::new(req.into_body().collect().await?.to_bytes()))
        }
        _ => {
            let mut r = Response::new(Full::from("not found\n"));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
    };
    Ok(resp)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server_stack = Stack::new("mem://http", None)?;
    let client_stack = Stack::new("mem://http", None)?;
    server_stack.cmd("ip link set vde0 up; ip addr add 10.8.0.1/24 dev vde0")?;
    client_stack.cmd("ip link set vde0 up; ip addr add 10.8.0.2/24 dev vde0")?;

    // The server: hyper's own accept loop, as over tokio::net::TcpListener. Each
    // connection's outcome goes to `served`.
    let listener = TcpListener::bind(&server_stack, "10.8.0.1:80").await?;
    let (done, mut served) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            let done = done.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| handle(req, peer));
                let r = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                let _ = done.send(r);
            });
        }
    });

    // The client: one connection, several requests on it (keep-alive).
    let stream = TcpStream::connect(&client_stack, "10.8.0.1:80").await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let client = tokio::spawn(conn);

    let mut checks = Vec::new();
    for (method, path, body) in [
        (Method::GET, "/", ""),
        (Method::POST, "/echo", "a body that goes there and back"),
        (Method::GET, "/missing", ""),
    ] {
        let req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(hyper::header::HOST, "10.8.0.1")
            .body(Full::<Bytes>::from(body))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let text = String::from_utf8(resp.into_body().collect().await?.to_bytes().to_vec())?;
        println!("{method} {path} -> {status} {text:?}");
        checks.push((path, status, text));
    }
    anyhow::ensure!(checks[0].1 == StatusCode::OK && checks[0].2.starts_with("hello, 10.8.0.2:"));
    anyhow::ensure!(checks[1].2 == "a body that goes there and back");
    anyhow::ensure!(checks[2].1 == StatusCode::NOT_FOUND);
    // The client hangs up; the server's side of the connection ends cleanly.
    drop(sender);
    client.await??;
    served.recv().await.expect("the server reports")?;
    println!("connection closed cleanly on both sides");
    Ok(())
}
