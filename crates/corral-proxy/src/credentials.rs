//! Placeholders the sandbox holds, replaced by the secrets they stand for in requests the
//! policy binds them to: the allowing group's binaries reaching the group's endpoints.
//! Only over TLS the proxy originates, or to a loopback server (a local gateway): a
//! secret never crosses the network in clear text.

use std::sync::Arc;

use corral_policy::Substitution;

use crate::head::RequestHead;

/// `head` with its placeholders replaced, or `None` when nothing is to replace.
pub(crate) fn substitute(head: &RequestHead, creds: &[Arc<Substitution>]) -> Option<RequestHead> {
    if creds.is_empty() {
        return None;
    }
    let mut changed = false;
    let headers = head
        .headers
        .iter()
        .map(|(name, value)| {
            let replaced = creds.iter().find_map(|c| c.apply(name, value));
            changed |= replaced.is_some();
            (name.clone(), replaced.unwrap_or_else(|| value.clone()))
        })
        .collect();
    changed.then(|| RequestHead {
        headers,
        ..head.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::head::Target;

    #[test]
    fn only_the_named_headers_and_only_the_placeholder_change() {
        let creds = vec![Arc::new(Substitution {
            placeholder: "corral-placeholder-key".into(),
            secret: "sk-real".into(),
            headers: vec!["authorization".into(), "x-api-key".into()],
        })];
        let head = RequestHead {
            method: "POST".into(),
            target: Target::Forward {
                host: "h".into(),
                port: 443,
                path: "/".into(),
            },
            version: 1,
            headers: vec![
                (
                    "Authorization".into(),
                    b"Bearer corral-placeholder-key".to_vec(),
                ),
                ("X-Other".into(), b"corral-placeholder-key".to_vec()),
            ],
        };
        let out = substitute(&head, &creds).unwrap();
        assert_eq!(out.headers[0].1, b"Bearer sk-real");
        assert_eq!(out.headers[1].1, b"corral-placeholder-key");
        let none = RequestHead {
            headers: vec![("x-api-key".into(), b"other".to_vec())],
            ..head.clone()
        };
        assert!(substitute(&none, &creds).is_none());
        assert!(format!("{:?}", creds[0]).find("sk-real").is_none());
    }
}
