//! `ledger token new`: a new token's secret, printed once, and the `[[token]]`
//! block to paste into the config file, which holds only the secret's SHA-256.
//! It writes nothing: the server reads tokens from its config file only.

use std::fmt::Write;

use super::serve::new_secret;
use crate::config::{Config, ConfigFile};
use crate::http::auth::{Role, Secret};

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Print a new secret (once) and the `[[token]]` block that grants it, with `secret_sha256`.
    New(NewArgs),
}

#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The token's name, recorded as the actor of every event it causes; unique among the tokens.
    #[arg(long)]
    pub name: String,
    /// The tenants it is granted, comma-separated, or `*` for all.
    #[arg(long, value_delimiter = ',', required = true)]
    pub tenants: Vec<String>,
    /// client: commands and queries; admin: also forensics and campaign resume.
    #[arg(long, value_enum)]
    pub role: RoleArg,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum RoleArg {
    Client,
    Admin,
}

pub fn run(command: &TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::New(args) => {
            print!("{}", new(args, &new_secret())?);
            Ok(())
        }
    }
}

/// What `token new` prints for `secret`: the secret, then the block, checked
/// by the server's own configuration parser so that a bad name or tenant is
/// refused here rather than at the next start.
pub fn new(args: &NewArgs, secret: &str) -> anyhow::Result<String> {
    let role = match args.role {
        RoleArg::Client => Role::Client,
        RoleArg::Admin => Role::Admin,
    };
    let digest: String = Secret::from(secret).digest().iter().map(|b| format!("{b:02x}")).collect();
    // JSON strings are TOML basic strings: a name with quotes stays one string.
    let quote = |s: &str| serde_json::to_string(s).expect("a string serializes");
    let tenants: Vec<String> = args.tenants.iter().map(|t| quote(t.trim())).collect();
    let mut block = String::new();
    writeln!(block, "[[token]]").unwrap();
    writeln!(block, "name = {}", quote(&args.name)).unwrap();
    writeln!(block, "secret_sha256 = \"{digest}\"").unwrap();
    writeln!(block, "tenants = [{}]", tenants.join(", ")).unwrap();
    writeln!(block, "role = \"{}\"", if role == Role::Admin { "admin" } else { "client" }).unwrap();
    let file: ConfigFile = toml::from_str(&block)?;
    Config::from_file(file, None, None).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(format!(
        "# The secret of token {name}, shown this once (the server keeps only its SHA-256);\n\
         # the client sends it as `Authorization: Bearer <secret>`:\n\
         {secret}\n\n\
         # Paste into the server's config file (the same on every node of a cluster), then restart it:\n\
         {block}",
        name = quote(&args.name),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_block_parses_and_holds_the_digest_not_the_secret() {
        let args = NewArgs { name: "kloqo-web".into(), tenants: vec!["kloqo".into(), "acme".into()], role: RoleArg::Client };
        let printed = new(&args, "a-secret-of-sixteen-or-more").unwrap();
        let block = &printed[printed.find("[[token]]").unwrap()..];
        assert!(!block.contains("a-secret-of-sixteen-or-more"), "{block}");
        let config = Config::from_file(toml::from_str(block).unwrap(), None, None).unwrap();
        let (secret, token) = &config.tokens[0];
        assert_eq!(*secret, Secret::Sha256(Secret::from("a-secret-of-sixteen-or-more").digest()));
        assert_eq!(
            (&*token.name, token.tenants.as_slice(), token.role),
            ("kloqo-web", &["kloqo".to_owned(), "acme".to_owned()][..], Role::Client)
        );
    }

    #[test]
    fn a_bad_tenant_or_a_reserved_name_is_refused_here() {
        let bad_tenant = NewArgs { name: "x".into(), tenants: vec!["Not A Tenant".into()], role: RoleArg::Client };
        assert!(new(&bad_tenant, "s").unwrap_err().to_string().contains("tenants"));
        let admin = NewArgs { name: "admin".into(), tenants: vec!["*".into()], role: RoleArg::Admin };
        assert!(new(&admin, "s").unwrap_err().to_string().contains("admin_token"));
    }
}
