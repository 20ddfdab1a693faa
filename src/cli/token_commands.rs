//! `tokens`: create, list and revoke the API tokens the store keeps, and hash one for the
//! configuration file. These commands open the store themselves (as `migrate` does), so the first
//! admin token can be made before any token exists; coordinators pick changes up within seconds.

use std::io::BufRead;
use std::process::ExitCode;

use anyhow::Context;
use chrono::Utc;
use clap::{Args, Subcommand};
use serde_json::json;

use super::serve_commands::DatabaseArgs;
use super::table::{moment, print_table};
use crate::config::Config;
use crate::domain::{Roles, TokenName, TokenSecret};
use crate::store::{self, StoredToken};

/// `celeritas tokens`.
#[derive(Debug, Args)]
pub struct TokensArgs {
    #[command(subcommand)]
    pub command: TokensCommand,
}

/// What `celeritas tokens` does.
#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Makes a token and prints it once; the store keeps only its SHA-256.
    Create {
        /// The token's name, shown in logs and `tokens list`.
        name: String,
        /// What it may do, comma-separated: submit, read, operate, worker, admin.
        #[arg(long, value_delimiter = ',', required = true)]
        roles: Vec<String>,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Lists the store's tokens (names, roles, when made and revoked; never the tokens).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Revokes a token: every coordinator refuses it within seconds.
    Revoke {
        /// The token's name.
        name: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Reads a token on stdin and prints its SHA-256, for `[auth.tokens.NAME] sha256`.
    Hash,
}

pub async fn tokens(args: TokensArgs, config: Config) -> anyhow::Result<ExitCode> {
    let open = |database: DatabaseArgs| {
        let pool_size = config.coordinator.database_pool_size;
        async move {
            let url = &database.database_url;
            let opened = async {
                let store = store::open(url, pool_size).await?;
                // The tokens' tables may be newer than the store: the first admin token is
                // often made before any coordinator has run.
                store.migrate().await?;
                Ok::<_, anyhow::Error>(store)
            };
            opened
                .await
                .map_err(|error| super::explain_missing_database(error, url))
        }
    };
    match args.command {
        TokensCommand::Create {
            name,
            roles,
            database,
        } => {
            let name = TokenName::parse("name", &name)?;
            let roles = Roles::parse_all("--roles", &roles)?;
            let secret = TokenSecret::generate();
            let token = StoredToken {
                name: name.clone(),
                roles,
                digest: secret.digest(),
                created_at: Utc::now(),
                revoked_at: None,
            };
            let store = open(database).await?;
            if !store.create_token(&token).await? {
                anyhow::bail!("a token named {} exists already", name.as_str());
            }
            outln!("{}", secret.expose());
            errln!(
                "token {} ({}) created; it is shown only now",
                name.as_str(),
                roles.names()
            );
        }
        TokensCommand::List { json, database } => {
            let tokens = open(database).await?.tokens().await?;
            if json {
                let rows: Vec<_> = tokens
                    .iter()
                    .map(|token| {
                        json!({
                            "name": token.name.as_str(),
                            "roles": token.roles.names().split(',').collect::<Vec<_>>(),
                            "created_at": moment(Some(token.created_at)),
                            "revoked_at": token.revoked_at.map(|at| moment(Some(at))),
                        })
                    })
                    .collect();
                outln!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                let rows = tokens
                    .iter()
                    .map(|token| {
                        vec![
                            token.name.as_str().to_owned(),
                            token.roles.names(),
                            moment(Some(token.created_at)),
                            moment(token.revoked_at),
                        ]
                    })
                    .collect();
                print_table(&["NAME", "ROLES", "CREATED", "REVOKED"], rows);
            }
        }
        TokensCommand::Revoke { name, database } => {
            let name = TokenName::parse("name", &name)?;
            if !open(database)
                .await?
                .revoke_token(&name, Utc::now())
                .await?
            {
                anyhow::bail!("no unrevoked token is named {}", name.as_str());
            }
            outln!("token {} revoked", name.as_str());
        }
        TokensCommand::Hash => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("reading the token on stdin")?;
            let secret = TokenSecret::parse("stdin", line.trim_end_matches(['\r', '\n']))?;
            outln!("{}", secret.digest().to_hex());
        }
    }
    Ok(ExitCode::SUCCESS)
}
