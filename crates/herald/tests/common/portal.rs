//! Driving the customer portal as a browser would, over plain HTTP: a one-time link from the
//! admin API, the session cookie it sets, and forms posted with the page's CSRF token.

use super::{ADMIN, TestAccount, TestApp};
use reqwest::StatusCode;
use serde_json::Value;

/// A page as the portal answered it.
pub struct Page {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The first CSRF token of the page's forms.
    pub fn csrf(&self) -> String {
        let marker = "name=\"csrf\" value=\"";
        let start = self
            .body
            .find(marker)
            .unwrap_or_else(|| panic!("the page has no form: {}", self.body))
            + marker.len();
        let end = start + self.body[start..].find('"').unwrap();
        self.body[start..end].to_owned()
    }
}

/// A portal session: a client that follows no redirect, and the session's cookie.
pub struct Portal {
    pub base: String,
    client: reqwest::Client,
    pub cookie: String,
}

/// Makes a portal link for `account` with the admin token: `{url, expires_at}`.
pub async fn portal_link(app: &TestApp, account: &TestAccount) -> Value {
    let (status, link) = app
        .call(
            "POST",
            &format!("/v1/accounts/{}/portal-sessions", account.id),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(status, 201, "{link}");
    link
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// GETs a URL with no cookie.
pub async fn get_bare(url: &str) -> Page {
    let resp = client().get(url).send().await.unwrap();
    page(resp).await
}

/// Presses a link's "Open the portal" button (an empty form POSTed to the link), with no cookie.
pub async fn open_bare(url: &str) -> Page {
    let resp = client()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap();
    page(resp).await
}

async fn page(resp: reqwest::Response) -> Page {
    Page {
        status: resp.status(),
        headers: resp.headers().clone(),
        body: resp.text().await.unwrap(),
    }
}

impl Portal {
    /// Opens a fresh link for `account`: the session it starts.
    pub async fn open(app: &TestApp, account: &TestAccount) -> Self {
        let link = portal_link(app, account).await;
        Self::open_link(app, link["url"].as_str().unwrap()).await
    }

    /// Opens `url` as a person would (its page, then its button), which must start a session
    /// (a 303 to the portal with a cookie).
    pub async fn open_link(app: &TestApp, url: &str) -> Self {
        let shown = get_bare(url).await;
        assert_eq!(shown.status, 200, "{}", shown.body);
        assert!(
            shown.body.contains("<form method=\"post\""),
            "{}",
            shown.body
        );
        let opened = open_bare(url).await;
        assert_eq!(opened.status, 303, "{}", opened.body);
        assert_eq!(opened.location(), "/portal");
        let set = opened
            .headers
            .get("set-cookie")
            .expect("a session cookie")
            .to_str()
            .unwrap();
        let cookie = set.split(';').next().unwrap().to_owned();
        Self {
            base: app.url(""),
            client: client(),
            cookie,
        }
    }

    /// The same client with another cookie (a forged or stale session).
    pub fn with_cookie(&self, cookie: &str) -> Self {
        Self {
            base: self.base.clone(),
            client: client(),
            cookie: cookie.to_owned(),
        }
    }

    pub async fn get(&self, path: &str) -> Page {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        page(resp).await
    }

    /// POSTs a form as given (with whatever `csrf` field it holds, or none).
    pub async fn post_raw(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let mut body = form_urlencoded::Serializer::new(String::new());
        for (k, v) in fields {
            body.append_pair(k, v);
        }
        let resp = self
            .client
            .post(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.finish())
            .send()
            .await
            .unwrap();
        page(resp).await
    }

    /// POSTs a form with this session's CSRF token, read from the portal's home page.
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = self.get("/portal").await.csrf();
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        self.post_raw(path, &all).await
    }
}
