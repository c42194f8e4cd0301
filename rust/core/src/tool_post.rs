//! The POST of an HTTP tool, made through the model calls' [`HttpClient`]: the
//! same connection pool, the same split timeouts (with the tool's own limit on
//! the whole request) and the same abort when the caller gives up.

use std::time::Duration;

use crate::error::ExecutorError;
use crate::http::{Deadlines, HttpClient, PostRequest};
use crate::model_call::{AbortOnDrop, read_to_end};

/// What a tool's endpoint answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolReply {
    /// The HTTP status.
    pub status: u16,
    /// The body, as text (invalid UTF-8 replaced).
    pub body: String,
}

/// POSTs `body` (JSON) to `url` with `headers` and reads the whole answer
/// within `limit`. Runs as a tokio task of its own; dropping the returned
/// future aborts the request.
pub async fn post_tool(
    client: HttpClient,
    url: String,
    body: Vec<u8>,
    headers: Vec<(String, String)>,
    limit: Duration,
) -> Result<ToolReply, ExecutorError> {
    let task = AbortOnDrop(tokio::spawn(async move {
        let mut deadlines = Deadlines::start_within(client.config(), limit);
        let request = PostRequest {
            url: &url,
            body: body.into(),
            bearer: None,
            request_id: None,
            headers: &headers,
            streaming: false,
        };
        let response = client.post_json(request, &deadlines).await?;
        let status = response.status().as_u16();
        let mut bytes = response.bytes_stream();
        let body = read_to_end(&mut bytes, &mut deadlines).await?;
        Ok(ToolReply {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }));
    match task.await {
        Ok(result) => result,
        Err(error) => Err(ExecutorError::Execution(format!(
            "tool request task failed: {error}"
        ))),
    }
}
