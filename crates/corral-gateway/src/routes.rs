//! Which endpoint a request is for, and which model route a client's model id names.

use std::collections::HashMap;

use crate::config::ModelRoute;
use crate::sigv4::percent_decode;

/// The API the client speaks; errors are answered in its format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    Anthropic,
    Bedrock,
}

impl Surface {
    pub fn name(self) -> &'static str {
        match self {
            Surface::Anthropic => "anthropic",
            Surface::Bedrock => "bedrock",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Healthz,
    Readyz,
    Metrics,
    /// `POST /v1/messages`
    Messages,
    /// `POST /v1/messages/count_tokens`
    AnthropicCountTokens,
    /// `GET /v1/models`
    ListModels,
    /// `POST /model/{id}/invoke` and `/invoke-with-response-stream`
    Invoke {
        model: String,
        stream: bool,
    },
    /// `POST /model/{id}/converse` and `/converse-stream`
    Converse {
        model: String,
        stream: bool,
    },
    /// `POST /model/{id}/count-tokens`
    BedrockCountTokens {
        model: String,
    },
    /// `GET /inference-profiles`
    ListProfiles,
    /// `GET /inference-profiles/{id}`
    GetProfile {
        id: String,
    },
}

impl Endpoint {
    pub fn surface(&self) -> Surface {
        match self {
            Endpoint::Messages | Endpoint::AnthropicCountTokens | Endpoint::ListModels => {
                Surface::Anthropic
            }
            _ => Surface::Bedrock,
        }
    }

    pub fn operation(&self) -> &'static str {
        match self {
            Endpoint::Healthz => "healthz",
            Endpoint::Readyz => "readyz",
            Endpoint::Metrics => "metrics",
            Endpoint::Messages => "messages",
            Endpoint::AnthropicCountTokens | Endpoint::BedrockCountTokens { .. } => "count-tokens",
            Endpoint::ListModels => "list-models",
            Endpoint::Invoke { stream: false, .. } => "invoke",
            Endpoint::Invoke { stream: true, .. } => "invoke-stream",
            Endpoint::Converse { stream: false, .. } => "converse",
            Endpoint::Converse { stream: true, .. } => "converse-stream",
            Endpoint::ListProfiles => "list-inference-profiles",
            Endpoint::GetProfile { .. } => "get-inference-profile",
        }
    }
}

/// A request the gateway has no endpoint for: `(surface, status, message)`.
pub type NoRoute = (Surface, u16, String);

/// Maps a method and raw (still percent-encoded) path to an endpoint.
pub fn route(method: &http::Method, path: &str) -> Result<Endpoint, NoRoute> {
    let get = method == http::Method::GET || method == http::Method::HEAD;
    let post = method == http::Method::POST;
    let want = |ok: bool, e: Endpoint| {
        if ok {
            Ok(e)
        } else {
            let s = e.surface();
            Err((s, 405, format!("method {method} is not allowed on {path}")))
        }
    };
    match path {
        "/healthz" => return want(get, Endpoint::Healthz),
        "/readyz" => return want(get, Endpoint::Readyz),
        "/metrics" => return want(get, Endpoint::Metrics),
        "/v1/messages" => return want(post, Endpoint::Messages),
        "/v1/messages/count_tokens" => return want(post, Endpoint::AnthropicCountTokens),
        "/v1/models" => return want(get, Endpoint::ListModels),
        "/inference-profiles" | "/inference-profiles/" => return want(get, Endpoint::ListProfiles),
        _ => {}
    }
    if let Some(id) = path.strip_prefix("/inference-profiles/") {
        return want(
            get,
            Endpoint::GetProfile {
                id: percent_decode(id),
            },
        );
    }
    if let Some(rest) = path.strip_prefix("/model/") {
        if let Some((model, action)) = rest.rsplit_once('/') {
            let model = percent_decode(model);
            let e = match action {
                "invoke" => Some(Endpoint::Invoke {
                    model,
                    stream: false,
                }),
                "invoke-with-response-stream" => Some(Endpoint::Invoke {
                    model,
                    stream: true,
                }),
                "converse" => Some(Endpoint::Converse {
                    model,
                    stream: false,
                }),
                "converse-stream" => Some(Endpoint::Converse {
                    model,
                    stream: true,
                }),
                "count-tokens" => Some(Endpoint::BedrockCountTokens { model }),
                _ => None,
            };
            if let Some(e) = e {
                return want(post, e);
            }
        }
    }
    let surface = if path.starts_with("/v1/") {
        Surface::Anthropic
    } else {
        Surface::Bedrock
    };
    Err((surface, 404, format!("no such endpoint: {method} {path}")))
}

const REGION_PREFIXES: [&str; 8] = [
    "us.", "eu.", "apac.", "global.", "us-gov.", "jp.", "au.", "ca.",
];

fn strip_region(id: &str) -> &str {
    REGION_PREFIXES
        .iter()
        .find_map(|p| id.strip_prefix(p))
        .unwrap_or(id)
}

/// The model routes, found by id, alias, ARN or region-prefixed id.
pub struct Models {
    routes: Vec<ModelRoute>,
    exact: HashMap<String, usize>,
    unprefixed: HashMap<String, usize>,
}

impl Models {
    pub fn new(routes: Vec<ModelRoute>) -> Models {
        let mut exact = HashMap::new();
        let mut unprefixed = HashMap::new();
        for (i, r) in routes.iter().enumerate() {
            for id in std::iter::once(&r.id).chain(&r.aliases) {
                exact.insert(id.clone(), i);
                unprefixed.entry(strip_region(id).to_string()).or_insert(i);
            }
        }
        Models {
            routes,
            exact,
            unprefixed,
        }
    }

    pub fn all(&self) -> &[ModelRoute] {
        &self.routes
    }

    /// The route for a client's (already percent-decoded) model id.
    pub fn resolve(&self, requested: &str) -> Option<&ModelRoute> {
        let mut candidates = vec![requested];
        // arn:aws:bedrock:REGION:ACCOUNT:inference-profile/ID or …:foundation-model/ID
        if requested.starts_with("arn:") {
            if let Some((_, last)) = requested.rsplit_once('/') {
                candidates.push(last);
            }
        }
        for c in &candidates {
            if let Some(&i) = self.exact.get(*c) {
                return Some(&self.routes[i]);
            }
        }
        for c in &candidates {
            if let Some(&i) = self.unprefixed.get(strip_region(c)) {
                return Some(&self.routes[i]);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn bedrock_paths_are_percent_decoded() {
        assert_eq!(
            route(
                &Method::POST,
                "/model/us.anthropic.claude-x-v1%3A0/invoke-with-response-stream"
            ),
            Ok(Endpoint::Invoke {
                model: "us.anthropic.claude-x-v1:0".into(),
                stream: true
            })
        );
        assert_eq!(
            route(
                &Method::POST,
                "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.a.b/converse"
            ),
            Ok(Endpoint::Converse {
                model: "arn:aws:bedrock:us-east-1:1:inference-profile/us.a.b".into(),
                stream: false
            })
        );
        assert_eq!(route(&Method::GET, "/v1/messages").unwrap_err().1, 405);
        assert_eq!(route(&Method::GET, "/nope").unwrap_err().1, 404);
    }

    #[test]
    fn models_resolve_through_aliases_arns_and_region_prefixes() {
        let m = Models::new(vec![ModelRoute {
            id: "claude-sonnet".into(),
            aliases: vec!["anthropic.claude-sonnet-v1:0".into()],
            upstream: "u".into(),
            upstream_model: None,
            display_name: None,
        }]);
        for id in [
            "claude-sonnet",
            "anthropic.claude-sonnet-v1:0",
            "us.anthropic.claude-sonnet-v1:0",
            "eu.anthropic.claude-sonnet-v1:0",
            "arn:aws:bedrock:us-east-1:123:inference-profile/us.anthropic.claude-sonnet-v1:0",
        ] {
            assert_eq!(
                m.resolve(id).map(|r| r.id.as_str()),
                Some("claude-sonnet"),
                "{id}"
            );
        }
        assert!(m.resolve("claude-opus").is_none());
    }
}
