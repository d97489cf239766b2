//! Model listings answered from the gateway's own routes: `GET /v1/models`,
//! `GET /inference-profiles` and `GET /inference-profiles/{id}`.

use serde_json::{json, Value};

use crate::config::ModelRoute;
use crate::exchange::Exchange;
use crate::keys::Caller;
use crate::response::{json_response, GwError, Response};
use crate::translate::Usage;

fn visible<'a>(ex: &'a Exchange, caller: Option<&Caller>) -> Vec<&'a ModelRoute> {
    ex.gw
        .models
        .all()
        .iter()
        .filter(|r| caller.is_none_or(|c| c.may_use(&r.id)))
        .collect()
}

pub(crate) fn list_models(ex: &mut Exchange, caller: Option<&Caller>) -> Response {
    let data: Vec<Value> = visible(ex, caller)
        .iter()
        .map(|r| {
            json!({
                "type": "model",
                "id": r.id,
                "display_name": r.display_name.clone().unwrap_or_else(|| r.id.clone()),
                "created_at": "2025-01-01T00:00:00Z",
            })
        })
        .collect();
    let body = json!({
        "data": data,
        "has_more": false,
        "first_id": data.first().map(|d| d["id"].clone()),
        "last_id": data.last().map(|d| d["id"].clone()),
    });
    let resp = json_response(200, &body, &ex.rec.request_id);
    ex.finish(200, &Usage::default(), 0, None);
    resp
}

fn profile(ex: &Exchange, r: &ModelRoute, id: &str) -> Value {
    let region = ex.gw.region();
    let base = id
        .split_once('.')
        .filter(|(p, _)| p.len() <= 7)
        .map(|(_, b)| b)
        .unwrap_or(id);
    json!({
        "inferenceProfileName": r.display_name.clone().unwrap_or_else(|| r.id.clone()),
        "description": format!("{} via corral gateway", r.id),
        "createdAt": "2025-01-01T00:00:00Z",
        "updatedAt": "2025-01-01T00:00:00Z",
        "inferenceProfileArn": format!("arn:aws:bedrock:{region}:000000000000:inference-profile/{id}"),
        "models": [{"modelArn": format!("arn:aws:bedrock:{region}::foundation-model/{base}")}],
        "inferenceProfileId": id,
        "status": "ACTIVE",
        "type": "SYSTEM_DEFINED",
    })
}

pub(crate) fn list_profiles(ex: &mut Exchange, caller: Option<&Caller>, query: &str) -> Response {
    let application_only = query.split('&').any(|p| p == "type=APPLICATION");
    let mut items = Vec::new();
    if !application_only {
        for r in visible(ex, caller) {
            for id in std::iter::once(&r.id).chain(&r.aliases) {
                if !id.starts_with("arn:") {
                    items.push(profile(ex, r, id));
                }
            }
        }
    }
    let resp = json_response(
        200,
        &json!({"inferenceProfileSummaries": items}),
        &ex.rec.request_id,
    );
    ex.finish(200, &Usage::default(), 0, None);
    resp
}

pub(crate) fn get_profile(
    ex: &mut Exchange,
    caller: Option<&Caller>,
    id: &str,
) -> Result<Response, GwError> {
    ex.rec.requested_model = Some(id.to_string());
    let route = ex
        .gw
        .models
        .resolve(id)
        .filter(|r| caller.is_none_or(|c| c.may_use(&r.id)))
        .cloned()
        .ok_or_else(|| {
            GwError::new(
                404,
                format!("inference profile {id:?} is not served by this gateway"),
            )
        })?;
    let shown = id.rsplit_once('/').map(|(_, l)| l).unwrap_or(id);
    let body = profile(ex, &route, shown);
    let resp = json_response(200, &body, &ex.rec.request_id);
    ex.finish(200, &Usage::default(), 0, None);
    Ok(resp)
}
