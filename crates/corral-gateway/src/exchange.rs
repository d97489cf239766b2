//! A request in progress: its audit record, its limit reservation and its clock.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::audit::Record;
use crate::clock;
use crate::limits::Reservation;
use crate::response::{GwError, Response};
use crate::routes::{Endpoint, Surface};
use crate::state::Gateway;
use crate::translate::Usage;

/// A request in progress: its audit record, its limit reservation, its clock.
/// Finishing writes the record; dropping it unfinished (client gone) writes it too.
pub struct Exchange {
    pub gw: Arc<Gateway>,
    pub rec: Record,
    pub start: Instant,
    pub surface: Surface,
    pub(crate) reservation: Option<Reservation>,
    done: bool,
}

impl Exchange {
    pub(crate) fn new(gw: Arc<Gateway>, endpoint: &Endpoint, peer: SocketAddr) -> Exchange {
        gw.metrics.in_flight(1);
        let rec = Record {
            time: clock::rfc3339_millis(clock::now_millis()),
            request_id: new_request_id(),
            client: peer.to_string(),
            surface: endpoint.surface().name(),
            operation: endpoint.operation(),
            ..Default::default()
        };
        Exchange {
            gw,
            rec,
            start: Instant::now(),
            surface: endpoint.surface(),
            reservation: None,
            done: false,
        }
    }

    /// Writes the record (before the response completes), settles limits, counts metrics.
    pub fn finish(
        &mut self,
        status: u16,
        usage: &Usage,
        response_bytes: u64,
        ttfb_ms: Option<u64>,
    ) {
        if self.done {
            return;
        }
        self.done = true;
        let latency = self.start.elapsed();
        self.rec.status = status;
        self.rec.input_tokens = usage.input;
        self.rec.output_tokens = usage.output;
        self.rec.cache_read_input_tokens = usage.cache_read;
        self.rec.cache_creation_input_tokens = usage.cache_creation;
        self.rec.stop_reason = usage.stop_reason.clone();
        self.rec.latency_ms = latency.as_millis() as u64;
        self.rec.ttfb_ms = ttfb_ms;
        self.rec.response_bytes = response_bytes;
        self.gw.audit.write(&self.rec);
        if let Some(r) = self.reservation.take() {
            self.gw.limiter.settle(&r, usage.total());
        }
        self.gw.metrics.request(
            self.surface.name(),
            self.rec.requested_model.as_deref().unwrap_or("-"),
            status,
            self.rec.key_id.as_deref().unwrap_or("-"),
            usage.input + usage.cache_read + usage.cache_creation,
            usage.output,
            latency.as_secs_f64() * 1000.0,
            ttfb_ms.map(|t| t as f64),
        );
        self.gw.metrics.in_flight(-1);
    }

    /// Moves the request into a relay task; `self` is left finished and inert.
    pub fn hand_off(&mut self) -> Exchange {
        self.done = true;
        Exchange {
            gw: self.gw.clone(),
            rec: std::mem::take(&mut self.rec),
            start: self.start,
            surface: self.surface,
            reservation: self.reservation.take(),
            done: false,
        }
    }

    pub(crate) fn fail(&mut self, err: GwError) -> Response {
        self.rec.error = Some(err.message.clone());
        let resp = err
            .clone()
            .into_response(self.surface, &self.rec.request_id);
        self.finish(
            err.status,
            &Usage::default(),
            err.message.len() as u64,
            None,
        );
        resp
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        if !self.done {
            self.rec.error.get_or_insert_with(|| {
                "client closed the connection before the response completed".into()
            });
            self.finish(499, &Usage::default(), 0, None);
        }
    }
}

pub(crate) fn new_request_id() -> String {
    let mut b = [0u8; 12];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    format!("req_{}", hex::encode(b))
}
