//! Tokens as an operator sets them up: the generated admin token keeps working
//! beside configured `[[token]]`s unless `[server] admin_token = false`, the
//! start-up log names the active tokens (never a secret), and `ledger token
//! new` prints a secret and a block the server authenticates it with.

use std::ffi::OsStr;
use std::process::Command;

use crate::support::Process;

const WEB_SECRET: &str = "kloqo-web-secret-for-tokens-test";

fn web_token_config(extra_server: &str) -> String {
    format!(
        "[server]\n{extra_server}\n[[token]]\nname = \"kloqo-web\"\nsecret = \"{WEB_SECRET}\"\ntenants = [\"kloqo\"]\nrole = \"client\"\n"
    )
}

async fn spawn_with_config(dir: &std::path::Path, config: &str) -> Process {
    let path = dir.join("ledger.toml");
    std::fs::write(&path, config).unwrap();
    Process::spawn_with(&dir.join("data"), &[OsStr::new("--config"), path.as_os_str()]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_keeps_working_beside_configured_tokens_and_the_log_names_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn_with_config(dir.path(), &web_token_config("")).await;
    assert!(!server.token.is_empty(), "admin.token was created");
    // The admin token reads forensics; the configured client token books.
    server.client.get("/v1/kloqo/events?from=1", &server.token).await.expect(200);
    server.client.get("/v1/kloqo/campaigns", WEB_SECRET).await.expect(200);
    server.client.get("/v1/kloqo/events?from=1", WEB_SECRET).await.expect_problem(403, "forbidden");
    let line = server.wait_for_line("tokens active").await;
    assert!(line.contains("kloqo-web (client: kloqo)") && line.contains("admin (admin: all tenants"), "{line}");
    assert!(!line.contains(WEB_SECRET) && !line.contains(&server.token), "the log names secrets: {line}");
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_false_turns_the_generated_token_off() {
    let dir = tempfile::tempdir().unwrap();
    let first = spawn_with_config(dir.path(), &web_token_config("")).await;
    let admin = first.token.clone();
    first.kill();
    let server = spawn_with_config(dir.path(), &web_token_config("admin_token = false")).await;
    server.client.get("/v1/kloqo/events?from=1", &admin).await.expect_problem(401, "unauthenticated");
    server.client.get("/v1/kloqo/campaigns", WEB_SECRET).await.expect(200);
    let line = server.wait_for_line("tokens active").await;
    assert!(!line.contains("admin ("), "{line}");
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_new_prints_a_secret_and_a_block_the_server_authenticates_it_with() {
    let output = Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args(["token", "new", "--name", "front-desk", "--tenants", "kloqo,acme", "--role", "client"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let printed = String::from_utf8(output.stdout).unwrap();
    let secret = printed.lines().find(|line| !line.is_empty() && !line.starts_with('#')).unwrap().to_owned();
    assert!(secret.len() >= 16 && !secret.contains(' '), "{printed}");
    let block = &printed[printed.find("[[token]]").expect("a [[token]] block")..];
    assert!(block.contains("secret_sha256 = ") && !block.contains(&secret), "the block holds the secret: {block}");

    let dir = tempfile::tempdir().unwrap();
    let server = spawn_with_config(dir.path(), block).await;
    server.client.get("/v1/acme/campaigns", &secret).await.expect(200);
    server.client.get("/v1/kloqo/campaigns", &secret).await.expect(200);
    server.client.get("/v1/other/campaigns", &secret).await.expect_problem(403, "forbidden");
    server.client.get("/v1/kloqo/events?from=1", &secret).await.expect_problem(403, "forbidden");
    server.kill();

    // A mistake is named before anything is printed, as the server would name it.
    let refused = Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args(["token", "new", "--name", "x", "--tenants", "Bad Tenant", "--role", "admin"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(refused.stdout.is_empty() && String::from_utf8_lossy(&refused.stderr).contains("tenants"), "{refused:?}");
}
