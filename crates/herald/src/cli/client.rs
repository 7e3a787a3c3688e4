//! The API client the user tools share: Herald's base URL and a credential (an API key, or the
//! admin token), JSON both ways, and a refusal turned into an error carrying the API's message.

use anyhow::{Context, bail};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::time::Duration;

pub struct Api {
    base: String,
    key: String,
    client: reqwest::Client,
}

/// A page of a list.
#[derive(Deserialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}

impl Api {
    pub fn new(base: &url::Url, key: String) -> anyhow::Result<Self> {
        Ok(Self {
            base: base.as_str().trim_end_matches('/').to_owned(),
            key,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
        })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.client.get(format!("{}{path}", self.base)))
            .await
    }

    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> anyhow::Result<T> {
        self.send(self.client.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    /// Sends with the key; an answer other than 2xx is an error carrying the API's message.
    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<T> {
        let response = request
            .bearer_auth(&self.key)
            .send()
            .await
            .with_context(|| format!("cannot reach Herald at {}", self.base))?;
        let status = response.status();
        let text = response.text().await.context("reading Herald's answer")?;
        if !status.is_success() {
            let error: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let error = &error["error"];
            let message = error["message"].as_str().unwrap_or(text.as_str());
            let field = error["field"]
                .as_str()
                .map(|f| format!(", field {f}"))
                .unwrap_or_default();
            bail!("the API refused ({status}{field}): {message}");
        }
        serde_json::from_str(&text)
            .with_context(|| format!("unexpected answer from Herald: {text}"))
    }
}
