//! `kaggleingest healthcheck`: GET /readyz and exit 0 on 200, for container
//! health checks on images that have no curl.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::Uri;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use anyhow::Context;

use crate::config::Settings;

const TIMEOUT: Duration = Duration::from_secs(5);

/// Ok when `url` (default: the configured bind address's /readyz) answers 200.
pub async fn run(settings: &Settings, url: Option<&str>) -> anyhow::Result<()> {
    let url = match url {
        Some(url) => url.to_owned(),
        None => {
            let mut addr = settings.bind;
            // A wildcard bind is reachable on loopback.
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            format!("http://{addr}/readyz")
        }
    };
    let status = tokio::time::timeout(TIMEOUT, get(&url))
        .await
        .map_err(|_| anyhow::anyhow!("{url}: no answer within {}s", TIMEOUT.as_secs()))??;
    if status == 200 {
        println!("{url}: ready");
        Ok(())
    } else {
        Err(anyhow::anyhow!("{url}: not ready (HTTP {status})"))
    }
}

async fn get(url: &str) -> anyhow::Result<u16> {
    let uri: Uri = url
        .parse()
        .with_context(|| format!("{url:?} is not a URL"))?;
    if uri.scheme_str() != Some("http") {
        anyhow::bail!("{url}: only http:// URLs are supported");
    }
    let host = uri.host().with_context(|| format!("{url}: no host"))?;
    let port = uri.port_u16().unwrap_or(80);
    let stream = TcpStream::connect((host, port))
        .await
        .with_context(|| url.to_owned())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .with_context(|| url.to_owned())?;
    tokio::spawn(connection);
    let request = hyper::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(
            hyper::header::HOST,
            uri.authority().map_or(host, |a| a.as_str()),
        )
        .body(Empty::<Bytes>::new())
        .with_context(|| url.to_owned())?;
    let response = sender
        .send_request(request)
        .await
        .with_context(|| url.to_owned())?;
    Ok(response.status().as_u16())
}
