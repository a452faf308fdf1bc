//! `kaggleingest healthcheck`: GET /readyz and exit 0 on 200, for container
//! health checks on images that have no curl.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::Uri;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::Settings;

const TIMEOUT: Duration = Duration::from_secs(5);

/// Ok when `url` (default: the configured bind address's /readyz) answers 200.
pub async fn run(settings: &Settings, url: Option<&str>) -> Result<(), String> {
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
        .map_err(|_| format!("{url}: no answer within {}s", TIMEOUT.as_secs()))??;
    if status == 200 {
        println!("{url}: ready");
        Ok(())
    } else {
        Err(format!("{url}: not ready (HTTP {status})"))
    }
}

async fn get(url: &str) -> Result<u16, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("{url}: only http:// URLs are supported"));
    }
    let host = uri.host().ok_or_else(|| format!("{url}: no host"))?;
    let port = uri.port_u16().unwrap_or(80);
    let stream = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    tokio::spawn(connection);
    let request = hyper::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(
            hyper::header::HOST,
            uri.authority().map_or(host, |a| a.as_str()),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("{url}: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    Ok(response.status().as_u16())
}
