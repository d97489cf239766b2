//! Response bodies (whole, or streamed from a relay task) and errors in each surface's format.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::Frame;
use serde_json::json;
use tokio::sync::mpsc;

use crate::routes::Surface;

/// A response body: whole, or chunks sent by a relay task as they arrive upstream.
pub enum Body {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
}

impl Body {
    pub fn full(b: impl Into<Bytes>) -> Body {
        Body::Full(Some(b.into()))
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }
}

pub type Response = http::Response<Body>;

/// A refusal or failure, answered in the client's surface format.
#[derive(Debug, Clone)]
pub struct GwError {
    pub status: u16,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl GwError {
    pub fn new(status: u16, message: impl Into<String>) -> GwError {
        GwError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> GwError {
        GwError::new(400, message)
    }

    /// The Anthropic `error.type` for this status.
    pub fn anthropic_type(&self) -> &'static str {
        match self.status {
            400 | 405 | 422 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            503 | 529 => "overloaded_error",
            504 => "timeout_error",
            _ => "api_error",
        }
    }

    /// The Bedrock exception name for this status.
    pub fn bedrock_type(&self) -> &'static str {
        match self.status {
            400 | 405 | 413 | 422 => "ValidationException",
            401 => "UnrecognizedClientException",
            403 => "AccessDeniedException",
            404 => "ResourceNotFoundException",
            408 | 504 => "ModelTimeoutException",
            429 => "ThrottlingException",
            503 | 529 => "ServiceUnavailableException",
            _ => "InternalServerException",
        }
    }

    pub fn into_response(self, surface: Surface, request_id: &str) -> Response {
        let (body, content_type) = match surface {
            Surface::Anthropic => (
                json!({"type": "error", "error": {"type": self.anthropic_type(), "message": self.message}, "request_id": request_id}),
                "application/json",
            ),
            Surface::Bedrock => (json!({"message": self.message}), "application/json"),
        };
        let mut resp = http::Response::builder()
            .status(self.status)
            .header("content-type", content_type)
            .header("request-id", request_id)
            .header("x-amzn-requestid", request_id)
            .header("x-corral-error", sanitize_header(&self.message));
        if surface == Surface::Bedrock {
            resp = resp.header("x-amzn-errortype", self.bedrock_type());
        }
        if let Some(secs) = self.retry_after {
            resp = resp.header("retry-after", secs.to_string());
        }
        resp.body(Body::full(body.to_string()))
            .unwrap_or_else(|_| http::Response::new(Body::full("internal error")))
    }
}

/// Header values must be visible ASCII; keep the message readable and short.
fn sanitize_header(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(300)
        .collect()
}

pub fn json_response(status: u16, value: &serde_json::Value, request_id: &str) -> Response {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("request-id", request_id)
        .header("x-amzn-requestid", request_id)
        .body(Body::full(value.to_string()))
        .unwrap_or_else(|_| http::Response::new(Body::full("internal error")))
}

pub fn text_response(status: u16, content_type: &str, text: String) -> Response {
    http::Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Body::full(text))
        .unwrap_or_else(|_| http::Response::new(Body::full("internal error")))
}
