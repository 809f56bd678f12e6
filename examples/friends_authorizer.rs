//! An example `presence.v1.WatchAuthorizer`: who may see whom, from a friends file.
//!
//! ```text
//! cargo run --example friends_authorizer -- --listen 127.0.0.1:50060 --friends friends.txt
//! PRESENCE_WATCH_POLICY=authorizer PRESENCE_AUTHORIZER_URL=http://127.0.0.1:50060 \
//!     cargo run --bin presence-node
//! ```
//!
//! The file has one rule per line (`#` starts a comment):
//!
//! ```text
//! friends alice bob      # alice and bob see each other
//! hide alice mallory     # alice looks like an unknown user to mallory (a block)
//! ```
//!
//! Anyone else is DENY. The file is read again on every call, so an edit applies to the next
//! question (the node asks again when its cached decision expires, or at once after the
//! admin call `InvalidateDecisions`). With `--token`, calls without
//! `authorization: Bearer <token>` are refused with UNAUTHENTICATED.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use presence_node::proto::watch_authorizer_server::{WatchAuthorizer, WatchAuthorizerServer};
use presence_node::proto::{CheckWatchRequest, CheckWatchResponse, Decision};
use tonic::{Request, Response, Status};

#[derive(Parser, Debug)]
#[command(about = "Example WatchAuthorizer: friends see each other, everyone else is denied")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:50060")]
    listen: SocketAddr,
    /// The friends file (see the module docs for its format).
    #[arg(long)]
    friends: PathBuf,
    /// Bearer token callers must send (PRESENCE_AUTHORIZER_TOKEN of the node).
    #[arg(long, env = "FRIENDS_AUTHORIZER_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// The rules of one friends file.
#[derive(Debug, Default)]
struct Rules {
    /// (viewer, user) pairs that may see each other.
    friends: HashSet<(String, String)>,
    /// (viewer, user): the user hides from the viewer.
    hidden: HashSet<(String, String)>,
}

impl Rules {
    fn parse(text: &str) -> Result<Self, String> {
        let mut rules = Rules::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                [] => {}
                ["friends", a, b] => {
                    rules.friends.insert((a.to_string(), b.to_string()));
                    rules.friends.insert((b.to_string(), a.to_string()));
                }
                ["hide", user, viewer] => {
                    rules.hidden.insert((viewer.to_string(), user.to_string()));
                }
                _ => {
                    return Err(format!(
                        "line {}: expected `friends A B` or `hide USER VIEWER`",
                        n + 1
                    ))
                }
            }
        }
        Ok(rules)
    }

    fn decide(&self, viewer: &str, user: &str) -> Decision {
        let pair = (viewer.to_owned(), user.to_owned());
        if self.hidden.contains(&pair) {
            Decision::Hide
        } else if self.friends.contains(&pair) {
            Decision::Allow
        } else {
            Decision::Deny
        }
    }
}

/// The service: rules from `file`, read on every call.
pub struct FriendsAuthorizer {
    pub file: PathBuf,
    pub token: Option<String>,
}

/// Serves `authorizer` on `listener` until the task is dropped (the tests use this too).
pub async fn serve(
    listener: tokio::net::TcpListener,
    authorizer: FriendsAuthorizer,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(WatchAuthorizerServer::new(authorizer))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
        .await
}

#[tonic::async_trait]
impl WatchAuthorizer for FriendsAuthorizer {
    async fn check_watch(
        &self,
        request: Request<CheckWatchRequest>,
    ) -> Result<Response<CheckWatchResponse>, Status> {
        if let Some(token) = &self.token {
            let given = request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            if given != Some(token.as_str()) {
                return Err(Status::unauthenticated("bearer token required"));
            }
        }
        let text = tokio::fs::read_to_string(&self.file)
            .await
            .map_err(|e| Status::unavailable(format!("cannot read the friends file: {e}")))?;
        let rules = Rules::parse(&text).map_err(Status::internal)?;
        let req = request.into_inner();
        let decisions: Vec<i32> = req
            .user_ids
            .iter()
            .map(|user| rules.decide(&req.viewer_id, user) as i32)
            .collect();
        println!(
            "{} asks about {:?}: {:?}",
            req.viewer_id,
            req.user_ids,
            decisions
                .iter()
                .map(|d| Decision::try_from(*d)
                    .map(|d| d.as_str_name())
                    .unwrap_or("?"))
                .collect::<Vec<_>>()
        );
        Ok(Response::new(CheckWatchResponse { decisions }))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    // Refuse a broken file at start rather than on the first call.
    Rules::parse(&std::fs::read_to_string(&args.friends)?)?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("friends authorizer on http://{}", listener.local_addr()?);
    let authorizer = FriendsAuthorizer {
        file: args.friends,
        token: args.token,
    };
    serve(listener, authorizer).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn friends_see_each_other_hidden_users_hide_and_others_are_denied() {
        let rules = Rules::parse("friends alice bob # pals\nhide alice mallory\n\n").unwrap();
        assert_eq!(rules.decide("bob", "alice"), Decision::Allow);
        assert_eq!(rules.decide("alice", "bob"), Decision::Allow);
        assert_eq!(rules.decide("mallory", "alice"), Decision::Hide);
        assert_eq!(rules.decide("carol", "alice"), Decision::Deny);
        assert!(Rules::parse("enemies a b").is_err());
    }
}
