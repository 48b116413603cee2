//! The playground page: served at `/` and `/playground` with a strict CSP, its script and style
//! with their types, revalidated by ETag, public even when client keys are required, and absent
//! with `server.playground = false`; `GET /v1/models/{id}` carries the catalog row it reads.

use reqwest::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH};

use crate::helpers::{spawn_app, spawn_with};

fn header(response: &reqwest::Response, name: reqwest::header::HeaderName) -> &str {
    response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

#[tokio::test]
async fn the_page_and_its_files_are_served_with_types_csp_and_etags() {
    let app = spawn_app().await;
    for path in ["/", "/playground", "/playground/"] {
        let page = app.http.get(format!("{}{path}", app.base)).send().await.expect("answers");
        assert_eq!(page.status(), 200, "{path}");
        assert_eq!(header(&page, CONTENT_TYPE), "text/html; charset=utf-8");
        let csp = header(&page, CONTENT_SECURITY_POLICY).to_owned();
        for rule in
            ["default-src 'none'", "script-src 'self'", "connect-src 'self'", "img-src 'self' data: blob:"]
        {
            assert!(csp.contains(rule), "{path}: CSP lacks {rule}: {csp}");
        }
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
        assert_eq!(header(&page, CACHE_CONTROL), "no-cache");
        assert_eq!(page.headers()["x-content-type-options"], "nosniff");
        let html = page.text().await.expect("body");
        assert!(html.contains(r#"<script type="module" src="/playground/app.js"></script>"#));
        for label in
            [">Model</label>", ">Prompt</label>", ">Width</label>", ">Height</label>", ">Generate</button>"]
        {
            assert!(html.contains(label), "{path} lacks {label}");
        }
        assert!(!html.contains("<script>") && !html.contains(" style="), "no inline script or style");
    }
    for (path, kind) in [("/playground/app.js", "text/javascript"), ("/playground/style.css", "text/css")] {
        let file = app.http.get(format!("{}{path}", app.base)).send().await.expect("answers");
        assert_eq!(file.status(), 200, "{path}");
        assert!(header(&file, CONTENT_TYPE).starts_with(kind), "{path}: {}", header(&file, CONTENT_TYPE));
        let etag = header(&file, ETAG).to_owned();
        assert!(etag.starts_with('"') && etag.len() > 10, "{path}: {etag}");
        let again = app
            .http
            .get(format!("{}{path}", app.base))
            .header(IF_NONE_MATCH, &etag)
            .send()
            .await
            .expect("answers");
        assert_eq!(again.status(), 304, "{path} revalidates");
        assert!(again.bytes().await.expect("body").is_empty());
    }
}

#[tokio::test]
async fn the_page_is_public_while_the_api_wants_a_token() {
    let app = spawn_with(
        bfl_sim::SimConfig { time_scale: 0.02, ..Default::default() },
        vec![("server.api_keys", vec!["sk-good".to_owned()].into())],
    )
    .await;
    let page = app.http.get(format!("{}/", app.base)).send().await.expect("answers");
    assert_eq!(page.status(), 200);
    assert_eq!(app.get("/v1/models").await.status, 401, "the API behind it still wants the token");
}

#[tokio::test]
async fn with_the_playground_off_its_paths_are_openai_shaped_404s() {
    let app = spawn_with(
        bfl_sim::SimConfig { time_scale: 0.02, ..Default::default() },
        vec![("server.playground", false.into())],
    )
    .await;
    for path in ["/", "/playground", "/playground/app.js", "/playground/style.css"] {
        let reply = app.get(path).await;
        assert_eq!(reply.status, 404, "{path}");
        assert_eq!(reply.error_type(), Some("invalid_request_error"), "{path}");
    }
    assert_eq!(app.get("/v1/models").await.status, 200);
}

#[tokio::test]
async fn one_model_carries_its_catalog_row_beside_the_openai_fields() {
    let app = spawn_app().await;
    let flex = app.get("/v1/models/flux-2-flex").await;
    assert_eq!(flex.status, 200);
    let body = &flex.body;
    assert_eq!((body["id"].as_str(), body["object"].as_str()), (Some("flux-2-flex"), Some("model")));
    assert_eq!(body["owned_by"], "black-forest-labs");
    let row = &body["fluxgate"];
    assert_eq!(row["size"]["kind"], "dimensions");
    assert_eq!((row["size"]["min"].as_u64(), row["size"]["max"].as_u64()), (Some(64), Some(2048)));
    assert_eq!(row["size"]["multiple"], 16);
    assert_eq!(row["size"]["max_pixels"], 2048 * 2048);
    assert_eq!(row["max_reference_images"], 8);
    assert_eq!(row["edits"], true);
    assert_eq!(row["steps"]["max"], 50);
    assert_eq!(row["guidance"]["max"], 10.0);
    assert_eq!(row["raw"], false);
    assert_eq!(row["price_usd"], 0.06);
    assert_eq!(row["max_prompt_tokens"], 32 * 1024);
    assert_eq!(row["safety_tolerance"]["max"], 6);

    let ultra = app.get("/v1/models/flux-pro-1.1-ultra").await.body;
    assert_eq!(ultra["fluxgate"]["size"]["kind"], "aspect_ratio");
    assert_eq!(ultra["fluxgate"]["size"]["widest"], "21:9");
    assert_eq!(ultra["fluxgate"]["raw"], true);
    assert_eq!(ultra["fluxgate"]["max_reference_images"], 0);
    assert!(ultra["fluxgate"]["steps"].is_null());
    let legacy = app.get("/v1/models/flux-dev").await.body;
    assert_eq!(legacy["fluxgate"]["size"]["multiple"], 32);
    assert!(legacy["fluxgate"]["size"]["max_pixels"].is_null());

    // The list stays plain OpenAI.
    let list = app.get("/v1/models").await.body;
    assert!(list["data"].as_array().expect("data").iter().all(|m| m.get("fluxgate").is_none()));
}
