//! Provisioning and history commands: `hookflash user add 201`, `hookflash calls history`, ...
//!
//! Every command opens the configured store (`database_url`, else SQLite in `data_dir`), works on one account (`--account NAME`,
//! default: the oldest account) and prints a human-readable result to stdout. Generated
//! secrets (passwords, API keys) are printed exactly once and never logged.

use std::collections::HashMap;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use hookflash_config::{Config, TrunkSpec};
use hookflash_store::normalize::number_digits;
use hookflash_store::{
    generate_password, Account, ApplicationSpec, CallRecord, DialClasses, DialPolicy, Hook,
    HookMethod, Store, StoreError,
};

/// Errors of the admin commands.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no account exists yet: create one with `hookflash account add NAME` (or run `hookflash serve` once for the demo account)")]
    NoAccount,
    #[error("account {0:?} does not exist (see `hookflash account list`)")]
    AccountNotFound(String),
    #[error("{0}")]
    NotFound(String),
    #[error("cannot write output: {0}")]
    Io(#[from] std::io::Error),
}

/// Which account a command works on.
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountArg {
    /// Account name (default: the oldest account).
    #[arg(long, value_name = "NAME")]
    pub account: Option<String>,
}

/// The admin commands; `main.rs` flattens them next to `serve`.
#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Manage users (extensions) and their SIP passwords.
    User {
        #[command(subcommand)]
        cmd: UserCmd,
    },
    /// Manage SIP trunks (carrier gateways).
    Trunk {
        #[command(subcommand)]
        cmd: TrunkCmd,
    },
    /// Manage phone numbers (DIDs) routed to users.
    Number {
        #[command(subcommand)]
        cmd: NumberCmd,
    },
    /// Manage API keys of the REST API.
    Apikey {
        #[command(subcommand)]
        cmd: ApikeyCmd,
    },
    /// Manage personal access tokens (sipgate API: Basic `tokenId:token`) of users.
    Pat {
        #[command(subcommand)]
        cmd: PatCmd,
    },
    /// Show call records.
    Calls {
        #[command(subcommand)]
        cmd: CallsCmd,
    },
    /// Manage accounts (tenants).
    Account {
        #[command(subcommand)]
        cmd: AccountCmd,
    },
    /// Manage applications (call hooks) and the numbers routed to them.
    App {
        #[command(subcommand)]
        cmd: AppCmd,
    },
}

/// `GET` or `POST`, any case.
fn parse_hook_method(s: &str) -> Result<HookMethod, String> {
    HookMethod::parse(s).ok_or_else(|| format!("{s:?} is not GET or POST"))
}

#[derive(Subcommand, Debug)]
pub enum AppCmd {
    /// Create an application of an account.
    Add {
        /// Account name.
        account: String,
        /// Application name (unique in the account).
        name: String,
        /// URL asked what to do with a call.
        #[arg(long, value_name = "URL")]
        call_hook: String,
        /// HTTP method of the call hook.
        #[arg(long, value_name = "GET|POST", default_value = "POST", value_parser = parse_hook_method)]
        method: HookMethod,
        /// URL told about the call's progress (POST).
        #[arg(long, value_name = "URL")]
        status_hook: Option<String>,
        /// URL asked when the call hook fails (POST).
        #[arg(long, value_name = "URL")]
        fallback: Option<String>,
    },
    /// List an account's applications and their numbers.
    #[command(alias = "ls")]
    List {
        /// Account name.
        account: String,
    },
    /// Delete an application (its numbers are freed).
    #[command(alias = "remove")]
    Rm {
        /// Account name.
        account: String,
        /// Application name.
        name: String,
    },
    /// Route a phone number (DID) to an application.
    Number {
        /// Account name.
        account: String,
        /// Application name.
        name: String,
        /// The number (stored as E.164 with '+').
        number: String,
    },
    /// Unroute a phone number from the application it is routed to.
    Unnumber {
        /// Account name.
        account: String,
        /// The number.
        number: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// Add a user; without --password a random one is generated and printed once.
    Add {
        /// Extension: the SIP user name and digest user name.
        extension: String,
        #[arg(long)]
        password: Option<String>,
        /// Display name.
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        #[command(flatten)]
        account: AccountArg,
    },
    /// List users with their number of registered devices.
    #[command(alias = "ls")]
    List {
        #[command(flatten)]
        account: AccountArg,
    },
    /// Remove a user with its registrations and numbers.
    #[command(alias = "rm")]
    Remove {
        extension: String,
        #[command(flatten)]
        account: AccountArg,
    },
    /// Set a user's password; without --password a random one is generated and printed once.
    Passwd {
        extension: String,
        #[arg(long)]
        password: Option<String>,
        #[command(flatten)]
        account: AccountArg,
    },
    /// Set (URL) or clear (--clear) the user's sipgate push webhook (newCall/answer/hangup).
    Webhook {
        extension: String,
        /// http:// or https:// URL that receives the form-encoded events.
        #[arg(required_unless_present = "clear", conflicts_with = "clear")]
        url: Option<String>,
        #[arg(long)]
        clear: bool,
        #[command(flatten)]
        account: AccountArg,
    },
    /// Switch a user's voicemail on (unanswered calls go to the mailbox) or off; without
    /// on/off, show it.
    Voicemail {
        extension: String,
        state: Option<OnOff>,
        #[command(flatten)]
        account: AccountArg,
    },
    /// Issue a JWT credential for the user (the `assertion` of the RingCentral dialect's
    /// JWT bearer grant); printed once. It stops working when the user's password changes.
    Jwt {
        extension: String,
        /// Lifetime in days (the server refuses credentials longer than
        /// `oauth.jwt_credential_max_days`).
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u16).range(1..=3650))]
        days: u16,
        #[command(flatten)]
        account: AccountArg,
    },
    /// Set the classes a user may dial (within the account's), or `account` for the account's.
    Dial {
        extension: String,
        /// Comma-separated classes (internal, national, international, premium; "" = none),
        /// or `account` to clear the user's own list.
        #[arg(long, value_name = "CLASSES|account", value_parser = parse_user_dial)]
        allow: UserDial,
        #[command(flatten)]
        account: AccountArg,
    },
}

/// `--allow` of `hookflash user dial`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserDial {
    /// The account's classes apply (no own list).
    Account,
    /// The user's own list (intersected with the account's).
    Own(DialClasses),
}

fn parse_user_dial(s: &str) -> Result<UserDial, String> {
    if s.trim().eq_ignore_ascii_case("account") {
        Ok(UserDial::Account)
    } else {
        DialClasses::parse_csv(s).map(UserDial::Own)
    }
}

fn parse_dial_classes(s: &str) -> Result<DialClasses, String> {
    DialClasses::parse_csv(s)
}

/// `on` or `off`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Subcommand, Debug)]
pub enum PatCmd {
    /// Create a token for a user; the token is printed once and stored only as a hash.
    Create {
        /// Extension of the user the token acts as.
        #[arg(long, value_name = "EXT")]
        user: String,
        #[arg(long, default_value = "cli")]
        name: String,
        #[command(flatten)]
        account: AccountArg,
    },
    /// List tokens (id, user, name).
    #[command(alias = "ls")]
    List {
        #[command(flatten)]
        account: AccountArg,
    },
    /// Revoke a token by id (token-XXXXXX).
    Revoke {
        id: String,
        #[command(flatten)]
        account: AccountArg,
    },
}

#[derive(Subcommand, Debug)]
pub enum TrunkCmd {
    /// Add a trunk. The first trunk of an account carries its outbound calls.
    Add {
        name: String,
        /// Gateway host (an IP literal also identifies inbound calls from the trunk).
        #[arg(long)]
        host: String,
        #[arg(long, default_value_t = 5060)]
        port: u16,
        #[arg(long, default_value = "udp", value_parser = ["udp", "tcp"])]
        transport: String,
        /// Digest user name for outbound INVITEs (requires --password).
        #[arg(long, requires = "password")]
        username: Option<String>,
        /// Digest password for outbound INVITEs (stored in clear: the protocol needs it).
        #[arg(long, requires = "username")]
        password: Option<String>,
        #[command(flatten)]
        account: AccountArg,
    },
    /// List trunks.
    #[command(alias = "ls")]
    List {
        #[command(flatten)]
        account: AccountArg,
    },
    /// Remove a trunk.
    #[command(alias = "rm")]
    Remove {
        name: String,
        #[command(flatten)]
        account: AccountArg,
    },
}

#[derive(Subcommand, Debug)]
pub enum NumberCmd {
    /// Route a phone number to a user (stored as E.164 with '+').
    Add {
        number: String,
        /// Extension of the user the number rings.
        #[arg(long, value_name = "EXT")]
        user: String,
        #[command(flatten)]
        account: AccountArg,
    },
    /// List numbers.
    #[command(alias = "ls")]
    List {
        #[command(flatten)]
        account: AccountArg,
    },
    /// Remove a number.
    #[command(alias = "rm")]
    Remove {
        number: String,
        #[command(flatten)]
        account: AccountArg,
    },
}

#[derive(Subcommand, Debug)]
pub enum ApikeyCmd {
    /// Create an API key; it is printed once and stored only as a hash.
    Create {
        #[arg(long, default_value = "cli")]
        name: String,
        #[command(flatten)]
        account: AccountArg,
    },
    /// List API keys (id, name, prefix).
    #[command(alias = "ls")]
    List {
        #[command(flatten)]
        account: AccountArg,
    },
    /// Revoke an API key by id.
    Revoke {
        id: String,
        #[command(flatten)]
        account: AccountArg,
    },
}

#[derive(Subcommand, Debug)]
pub enum CallsCmd {
    /// The newest calls with their legs.
    History {
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[command(flatten)]
        account: AccountArg,
    },
}

#[derive(Subcommand, Debug)]
pub enum AccountCmd {
    /// Create an account.
    Add {
        name: String,
        /// Digest realm / SIP domain (default: the name).
        #[arg(long)]
        realm: Option<String>,
    },
    /// List accounts; `*` marks the default one.
    #[command(alias = "ls")]
    List,
    /// Show or change what an account may dial (toll-fraud defence); prints the policy.
    Dial {
        #[command(flatten)]
        account: AccountArg,
        /// Country calling code without '+' (e.g. 49), or `none` to infer it from the
        /// account's numbers.
        #[arg(long, value_name = "CC|none")]
        country: Option<String>,
        /// Classes the account's users and API may dial, comma-separated: internal, national,
        /// international, premium ("" = none).
        #[arg(long, value_name = "CLASSES", value_parser = parse_dial_classes)]
        allow: Option<DialClasses>,
        /// Allow click-to-dial sessions between two outside numbers.
        #[arg(long, value_name = "true|false")]
        outside_sessions: Option<bool>,
        /// Concurrent calls with an outbound trunk leg (0 = unlimited).
        #[arg(long, value_name = "N")]
        max_outbound: Option<u32>,
        /// Outbound trunk legs started per minute (0 = unlimited).
        #[arg(long, value_name = "N")]
        per_minute: Option<u32>,
    },
}

/// Runs an admin command against the configured store (`database_url`, else SQLite in
/// `config.data_dir`), printing to stdout.
pub async fn run(cmd: AdminCommand, config: &Config) -> Result<(), CliError> {
    let store = Store::open_configured(&config.data_dir, config.database_url.as_ref()).await?;
    let mut out = std::io::stdout().lock();
    let result = execute(cmd, &store, &mut out).await;
    out.flush()?;
    store.close().await;
    result
}

/// Runs an admin command against an open store, writing to `out`.
pub async fn execute(
    cmd: AdminCommand,
    store: &Store,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    match cmd {
        AdminCommand::User { cmd } => user(cmd, store, out).await,
        AdminCommand::Trunk { cmd } => trunk(cmd, store, out).await,
        AdminCommand::Number { cmd } => number(cmd, store, out).await,
        AdminCommand::Apikey { cmd } => apikey(cmd, store, out).await,
        AdminCommand::Pat { cmd } => pat(cmd, store, out).await,
        AdminCommand::Calls { cmd } => calls(cmd, store, out).await,
        AdminCommand::Account { cmd } => account(cmd, store, out).await,
        AdminCommand::App { cmd } => app(cmd, store, out).await,
    }
}

async fn account_named(store: &Store, name: &str) -> Result<Account, CliError> {
    resolve_account(
        store,
        &AccountArg {
            account: Some(name.to_string()),
        },
    )
    .await
}

async fn app(cmd: AppCmd, store: &Store, out: &mut dyn Write) -> Result<(), CliError> {
    match cmd {
        AppCmd::Add {
            account,
            name,
            call_hook,
            method,
            status_hook,
            fallback,
        } => {
            let acc = account_named(store, &account).await?;
            let spec = ApplicationSpec {
                name,
                call_hook: Hook {
                    method,
                    ..Hook::post(&call_hook)
                },
                call_status_hook: status_hook.as_deref().map(Hook::post),
                fallback: fallback.as_deref().map(Hook::post),
            };
            let a = store.create_application(&acc.id, &spec).await?;
            writeln!(
                out,
                "added application {} ({}) -> {} {} (account {})",
                a.name,
                a.id,
                a.call_hook.method.as_str(),
                a.call_hook.url,
                acc.name
            )?;
        }
        AppCmd::List { account } => {
            let acc = account_named(store, &account).await?;
            let apps = store.applications(&acc.id).await?;
            if apps.is_empty() {
                writeln!(out, "no applications in account {}", acc.name)?;
                return Ok(());
            }
            let mut numbers: HashMap<String, Vec<String>> = HashMap::new();
            for n in store.application_numbers(&acc.id).await? {
                numbers.entry(n.application_id).or_default().push(n.number);
            }
            let hook = |h: Option<&Hook>| {
                h.map_or_else(
                    || "-".to_string(),
                    |h| format!("{} {}", h.method.as_str(), h.url),
                )
            };
            let rows: Vec<Vec<String>> = apps
                .iter()
                .map(|a| {
                    vec![
                        a.name.clone(),
                        hook(Some(&a.call_hook)),
                        hook(a.call_status_hook.as_ref()),
                        hook(a.fallback.as_ref()),
                        numbers
                            .get(&a.id)
                            .map_or_else(|| "-".to_string(), |n| n.join(",")),
                    ]
                })
                .collect();
            write_table(
                out,
                &["NAME", "CALL HOOK", "STATUS HOOK", "FALLBACK", "NUMBERS"],
                &rows,
            )?;
        }
        AppCmd::Rm { account, name } => {
            let acc = account_named(store, &account).await?;
            let a = application_named(store, &acc, &name).await?;
            if !store.delete_application(&acc.id, &a.id).await? {
                return Err(no_application(&acc, &name));
            }
            writeln!(out, "removed application {name} from account {}", acc.name)?;
        }
        AppCmd::Number {
            account,
            name,
            number,
        } => {
            let acc = account_named(store, &account).await?;
            let a = application_named(store, &acc, &name).await?;
            let n = store
                .add_application_number(&acc.id, &number, &a.id)
                .await?;
            writeln!(
                out,
                "routed number {} -> application {name} (account {})",
                n.number, acc.name
            )?;
        }
        AppCmd::Unnumber { account, number } => {
            let acc = account_named(store, &account).await?;
            let digits = number_digits(&number)
                .ok_or_else(|| StoreError::Invalid(format!("{number:?} is not a phone number")))?;
            let wanted = format!("+{digits}");
            let found = store
                .application_numbers(&acc.id)
                .await?
                .into_iter()
                .find(|n| n.number == wanted);
            let removed = match found {
                Some(n) => store.remove_application_number(&acc.id, &n.id).await?,
                None => false,
            };
            if !removed {
                return Err(CliError::NotFound(format!(
                    "number {wanted} is not routed to an application of account {}",
                    acc.name
                )));
            }
            writeln!(out, "unrouted number {wanted} (account {})", acc.name)?;
        }
    }
    Ok(())
}

fn no_application(acc: &Account, name: &str) -> CliError {
    CliError::NotFound(format!(
        "application {name:?} does not exist in account {} (see `hookflash app list {}`)",
        acc.name, acc.name
    ))
}

async fn application_named(
    store: &Store,
    acc: &Account,
    name: &str,
) -> Result<hookflash_store::Application, CliError> {
    store
        .application_by_name(&acc.id, name.trim())
        .await?
        .ok_or_else(|| no_application(acc, name))
}

async fn resolve_account(store: &Store, arg: &AccountArg) -> Result<Account, CliError> {
    match &arg.account {
        Some(name) => store
            .account_by_name(name)
            .await?
            .ok_or_else(|| CliError::AccountNotFound(name.clone())),
        None => store.default_account().await?.ok_or(CliError::NoAccount),
    }
}

async fn user(cmd: UserCmd, store: &Store, out: &mut dyn Write) -> Result<(), CliError> {
    match cmd {
        UserCmd::Add {
            extension,
            password,
            name,
            account,
        } => {
            let acc = resolve_account(store, &account).await?;
            let (password, generated) = match password {
                Some(p) => (p, false),
                None => (generate_password(), true),
            };
            store
                .add_user(&acc.id, &extension, &password, name.as_deref())
                .await?;
            writeln!(
                out,
                "added user {extension} to account {} (SIP user {extension}@{})",
                acc.name, acc.realm
            )?;
            if generated {
                writeln!(out, "password: {password}")?;
                writeln!(out, "(shown once; only its digest hash is stored)")?;
            }
        }
        UserCmd::List { account } => {
            let acc = resolve_account(store, &account).await?;
            let users = store.users(&acc.id).await?;
            if users.is_empty() {
                writeln!(out, "no users in account {}", acc.name)?;
                return Ok(());
            }
            let now = unix_now();
            let mut rows = Vec::with_capacity(users.len());
            for u in &users {
                let regs = store.registrations(&u.id, now).await?;
                rows.push(vec![
                    u.extension.clone(),
                    u.display_name.clone().unwrap_or_else(|| "-".into()),
                    regs.len().to_string(),
                ]);
            }
            write_table(out, &["EXTENSION", "NAME", "REGISTERED"], &rows)?;
        }
        UserCmd::Jwt {
            extension,
            days,
            account,
        } => {
            let acc = resolve_account(store, &account).await?;
            let user = store
                .user_by_extension(&acc.id, &extension)
                .await?
                .ok_or_else(|| {
                    CliError::NotFound(format!(
                        "user {extension} does not exist in account {}",
                        acc.name
                    ))
                })?;
            let secs = i64::from(days) * 86_400;
            let jwt = hookflash_api::ringcentral::issue_jwt_credential(
                store, &user, &acc.realm, secs, secs,
            )
            .await?;
            writeln!(
                out,
                "JWT credential of user {extension} of account {} (valid {days} days; shown once)",
                acc.name
            )?;
            writeln!(out, "jwt: {jwt}")?;
        }
        UserCmd::Remove { extension, account } => {
            let acc = resolve_account(store, &account).await?;
            if !store.remove_user(&acc.id, &extension).await? {
                return Err(CliError::NotFound(format!(
                    "user {extension} does not exist in account {}",
                    acc.name
                )));
            }
            writeln!(out, "removed user {extension} from account {}", acc.name)?;
        }
        UserCmd::Passwd {
            extension,
            password,
            account,
        } => {
            let acc = resolve_account(store, &account).await?;
            let (password, generated) = match password {
                Some(p) => (p, false),
                None => (generate_password(), true),
            };
            if !store
                .set_user_password(&acc.id, &extension, &password)
                .await?
            {
                return Err(CliError::NotFound(format!(
                    "user {extension} does not exist in account {}",
                    acc.name
                )));
            }
            writeln!(out, "password of user {extension} changed")?;
            if generated {
                writeln!(out, "password: {password}")?;
                writeln!(out, "(shown once; only its digest hash is stored)")?;
            }
        }
        UserCmd::Webhook {
            extension,
            url,
            clear,
            account,
        } => {
            let acc = resolve_account(store, &account).await?;
            let url = if clear { None } else { url };
            if !store
                .set_user_webhook(&acc.id, &extension, url.as_deref())
                .await?
            {
                return Err(CliError::NotFound(format!(
                    "user {extension} does not exist in account {}",
                    acc.name
                )));
            }
            match url {
                Some(url) => writeln!(out, "webhook of user {extension}: {url}")?,
                None => writeln!(out, "webhook of user {extension} cleared")?,
            }
        }
        UserCmd::Voicemail {
            extension,
            state,
            account,
        } => {
            let acc = resolve_account(store, &account).await?;
            let Some(u) = store.user_by_extension(&acc.id, &extension).await? else {
                return Err(CliError::NotFound(format!(
                    "user {extension} does not exist in account {}",
                    acc.name
                )));
            };
            if let Some(state) = state {
                store.set_mailbox(&u.id, state == OnOff::On).await?;
            }
            let mailbox = store.mailbox(&u.id).await?;
            let on = mailbox.as_ref().is_some_and(|m| m.enabled);
            let greeting = match mailbox.and_then(|m| m.greeting_path) {
                Some(_) => "custom",
                None => "default",
            };
            writeln!(
                out,
                "voicemail of user {extension}: {} ({greeting} greeting)",
                if on { "on" } else { "off" }
            )?;
        }
        UserCmd::Dial {
            extension,
            allow,
            account,
        } => {
            let acc = resolve_account(store, &account).await?;
            let Some(u) = store.user_by_extension(&acc.id, &extension).await? else {
                return Err(CliError::NotFound(format!(
                    "user {extension} does not exist in account {}",
                    acc.name
                )));
            };
            let classes = match allow {
                UserDial::Account => None,
                UserDial::Own(set) => Some(set),
            };
            store.set_user_dial_classes(&u.id, classes).await?;
            let account_classes = acc.dial.classes;
            match classes {
                None => writeln!(
                    out,
                    "dial classes of user {extension}: the account's ({})",
                    classes_text(account_classes)
                )?,
                Some(own) => writeln!(
                    out,
                    "dial classes of user {extension}: {} (with the account's {}: {})",
                    classes_text(own),
                    classes_text(account_classes),
                    classes_text(own.intersect(account_classes))
                )?,
            }
        }
    }
    Ok(())
}

/// A class list for people: `internal,national`, or `none`.
fn classes_text(classes: DialClasses) -> String {
    if classes == DialClasses::NONE {
        "none".to_string()
    } else {
        classes.to_csv()
    }
}

fn write_dial_policy(out: &mut dyn Write, account: &str, p: &DialPolicy) -> std::io::Result<()> {
    let limit = |n: u32| {
        if n == 0 {
            "unlimited".to_string()
        } else {
            n.to_string()
        }
    };
    writeln!(out, "dial policy of account {account}")?;
    writeln!(
        out,
        "  country code:         {}",
        p.country_code
            .as_deref()
            .unwrap_or("inferred from the account's numbers")
    )?;
    writeln!(out, "  may dial:             {}", classes_text(p.classes))?;
    writeln!(
        out,
        "  outside sessions:     {}",
        if p.outside_sessions {
            "allowed"
        } else {
            "denied"
        }
    )?;
    writeln!(
        out,
        "  max outbound calls:   {}",
        limit(p.max_outbound_calls)
    )?;
    writeln!(
        out,
        "  outbound per minute:  {}",
        limit(p.outbound_calls_per_minute)
    )?;
    Ok(())
}

async fn pat(cmd: PatCmd, store: &Store, out: &mut dyn Write) -> Result<(), CliError> {
    match cmd {
        PatCmd::Create {
            user,
            name,
            account,
        } => {
            let acc = resolve_account(store, &account).await?;
            let (pat, token) = store.create_pat(&acc.id, &user, &name).await?;
            writeln!(
                out,
                "created personal access token {} ({}) for user {user} of account {}",
                pat.id, pat.name, acc.name
            )?;
            writeln!(out, "token id: {}", pat.id)?;
            writeln!(out, "token: {token}")?;
            writeln!(out, "(shown once; only its hash is stored)")?;
        }
        PatCmd::List { account } => {
            let acc = resolve_account(store, &account).await?;
            let pats = store.pats(&acc.id).await?;
            if pats.is_empty() {
                writeln!(out, "no personal access tokens in account {}", acc.name)?;
                return Ok(());
            }
            let exts: HashMap<String, String> = store
                .users(&acc.id)
                .await?
                .into_iter()
                .map(|u| (u.id, u.extension))
                .collect();
            let rows: Vec<Vec<String>> = pats
                .iter()
                .map(|p| {
                    vec![
                        p.id.clone(),
                        exts.get(&p.user_id).cloned().unwrap_or_else(|| "?".into()),
                        p.name.clone(),
                        format_unix_ms(p.created_at.saturating_mul(1000)),
                    ]
                })
                .collect();
            write_table(out, &["ID", "USER", "NAME", "CREATED (UTC)"], &rows)?;
        }
        PatCmd::Revoke { id, account } => {
            let acc = resolve_account(store, &account).await?;
            if !store.revoke_pat(&acc.id, &id).await? {
                return Err(CliError::NotFound(format!(
                    "token {id} does not exist in account {}",
                    acc.name
                )));
            }
            writeln!(out, "revoked personal access token {id}")?;
        }
    }
    Ok(())
}

async fn trunk(cmd: TrunkCmd, store: &Store, out: &mut dyn Write) -> Result<(), CliError> {
    match cmd {
        TrunkCmd::Add {
            name,
            host,
            port,
            transport,
            username,
            password,
            account,
        } => {
            let acc = resolve_account(store, &account).await?;
            let spec = TrunkSpec {
                name,
                host,
                port,
                transport,
                username,
                password,
            };
            let t = store.add_trunk(&acc.id, &spec).await?;
            writeln!(
                out,
                "added trunk {} ({}:{} {}) to account {}",
                t.name, t.host, t.port, t.transport, acc.name
            )?;
        }
        TrunkCmd::List { account } => {
            let acc = resolve_account(store, &account).await?;
            let trunks = store.trunks(&acc.id).await?;
            if trunks.is_empty() {
                writeln!(out, "no trunks in account {}", acc.name)?;
                return Ok(());
            }
            let rows: Vec<Vec<String>> = trunks
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    vec![
                        t.name.clone(),
                        t.host.clone(),
                        t.port.to_string(),
                        t.transport.clone(),
                        t.username.clone().unwrap_or_else(|| "-".into()),
                        if i == 0 { "yes" } else { "" }.to_string(),
                    ]
                })
                .collect();
            write_table(
                out,
                &["NAME", "HOST", "PORT", "TRANSPORT", "USERNAME", "OUTBOUND"],
                &rows,
            )?;
        }
        TrunkCmd::Remove { name, account } => {
            let acc = resolve_account(store, &account).await?;
            if !store.remove_trunk(&acc.id, &name).await? {
                return Err(CliError::NotFound(format!(
                    "trunk {name} does not exist in account {}",
                    acc.name
                )));
            }
            writeln!(out, "removed trunk {name} from account {}", acc.name)?;
        }
    }
    Ok(())
}

async fn number(cmd: NumberCmd, store: &Store, out: &mut dyn Write) -> Result<(), CliError> {
    match cmd {
        NumberCmd::Add {
            number,
            user,
            account,
        } => {
            let acc = resolve_account(store, &account).await?;
            let n = store.add_number(&acc.id, &number, &user).await?;
            writeln!(
                out,
                "added number {} -> user {user} (account {})",
                n.number, acc.name
            )?;
        }
        NumberCmd::List { account } => {
            let acc = resolve_account(store, &account).await?;
            let numbers = store.numbers(&acc.id).await?;
            if numbers.is_empty() {
                writeln!(out, "no numbers in account {}", acc.name)?;
                return Ok(());
            }
            let exts: HashMap<String, String> = store
                .users(&acc.id)
                .await?
                .into_iter()
                .map(|u| (u.id, u.extension))
                .collect();
            let rows: Vec<Vec<String>> = numbers
                .iter()
                .map(|n| {
                    vec![
                        n.number.clone(),
                        exts.get(&n.user_id).cloned().unwrap_or_else(|| "?".into()),
                    ]
                })
                .collect();
            write_table(out, &["NUMBER", "USER"], &rows)?;
        }
        NumberCmd::Remove { number, account } => {
            let acc = resolve_account(store, &account).await?;
            if !store.remove_number(&acc.id, &number).await? {
                return Err(CliError::NotFound(format!(
                    "number {number} does not exist in account {}",
                    acc.name
                )));
            }
            writeln!(out, "removed number {number} from account {}", acc.name)?;
        }
    }
    Ok(())
}

async fn apikey(cmd: ApikeyCmd, store: &Store, out: &mut dyn Write) -> Result<(), CliError> {
    match cmd {
        ApikeyCmd::Create { name, account } => {
            let acc = resolve_account(store, &account).await?;
            let (key, plaintext) = store.create_api_key(&acc.id, &name).await?;
            writeln!(
                out,
                "created API key {} ({}) for account {}",
                key.id, key.name, acc.name
            )?;
            writeln!(out, "key: {plaintext}")?;
            writeln!(out, "(shown once; only its hash is stored)")?;
        }
        ApikeyCmd::List { account } => {
            let acc = resolve_account(store, &account).await?;
            let keys = store.api_keys(&acc.id).await?;
            if keys.is_empty() {
                writeln!(out, "no API keys in account {}", acc.name)?;
                return Ok(());
            }
            let rows: Vec<Vec<String>> = keys
                .iter()
                .map(|k| {
                    vec![
                        k.id.clone(),
                        k.name.clone(),
                        format!("{}...", k.prefix),
                        format_unix_ms(k.created_at.saturating_mul(1000)),
                    ]
                })
                .collect();
            write_table(out, &["ID", "NAME", "PREFIX", "CREATED (UTC)"], &rows)?;
        }
        ApikeyCmd::Revoke { id, account } => {
            let acc = resolve_account(store, &account).await?;
            if !store.revoke_api_key(&acc.id, &id).await? {
                return Err(CliError::NotFound(format!(
                    "API key {id} does not exist in account {}",
                    acc.name
                )));
            }
            writeln!(out, "revoked API key {id}")?;
        }
    }
    Ok(())
}

async fn calls(cmd: CallsCmd, store: &Store, out: &mut dyn Write) -> Result<(), CliError> {
    match cmd {
        CallsCmd::History { limit, account } => {
            let acc = resolve_account(store, &account).await?;
            let records = store.call_history(Some(&acc.id), i64::from(limit)).await?;
            if records.is_empty() {
                writeln!(out, "no calls in account {}", acc.name)?;
                return Ok(());
            }
            write_call_history(out, &records)?;
        }
    }
    Ok(())
}

async fn account(cmd: AccountCmd, store: &Store, out: &mut dyn Write) -> Result<(), CliError> {
    match cmd {
        AccountCmd::Add { name, realm } => {
            let realm = realm.unwrap_or_else(|| name.clone());
            let acc = store.create_account(&name, &realm).await?;
            writeln!(
                out,
                "added account {} (realm {}, id {})",
                acc.name, acc.realm, acc.id
            )?;
        }
        AccountCmd::List => {
            let accounts = store.accounts().await?;
            if accounts.is_empty() {
                writeln!(out, "no accounts")?;
                return Ok(());
            }
            let rows: Vec<Vec<String>> = accounts
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    vec![
                        if i == 0 { "*" } else { "" }.to_string(),
                        a.name.clone(),
                        a.realm.clone(),
                        a.id.clone(),
                        format_unix_ms(a.created_at.saturating_mul(1000)),
                    ]
                })
                .collect();
            write_table(out, &["", "NAME", "REALM", "ID", "CREATED (UTC)"], &rows)?;
        }
        AccountCmd::Dial {
            account,
            country,
            allow,
            outside_sessions,
            max_outbound,
            per_minute,
        } => {
            let acc = resolve_account(store, &account).await?;
            let mut policy = acc.dial.clone();
            if let Some(cc) = country {
                let cc = cc.trim();
                policy.country_code = if cc.eq_ignore_ascii_case("none") {
                    None
                } else {
                    Some(cc.to_string())
                };
            }
            if let Some(classes) = allow {
                policy.classes = classes;
            }
            if let Some(v) = outside_sessions {
                policy.outside_sessions = v;
            }
            if let Some(n) = max_outbound {
                policy.max_outbound_calls = n;
            }
            if let Some(n) = per_minute {
                policy.outbound_calls_per_minute = n;
            }
            if policy != acc.dial {
                store.set_account_dial_policy(&acc.id, &policy).await?;
                // Print what is stored now.
                policy = store
                    .account_by_id(&acc.id)
                    .await?
                    .ok_or_else(|| CliError::AccountNotFound(acc.name.clone()))?
                    .dial;
            }
            write_dial_policy(out, &acc.name, &policy)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Output helpers

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Column widths (in characters) for a table.
fn widths(headers: &[&str], rows: &[Vec<String>]) -> Vec<usize> {
    let mut w: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(x) = w.get_mut(i) {
                *x = (*x).max(cell.chars().count());
            }
        }
    }
    w
}

fn format_row(cells: &[String], widths: &[usize]) -> String {
    let mut line = String::new();
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            line.push_str("  ");
        }
        let width = widths.get(i).copied().unwrap_or(0);
        line.push_str(cell);
        let pad = width.saturating_sub(cell.chars().count());
        line.extend(std::iter::repeat_n(' ', pad));
    }
    line.trim_end().to_string()
}

fn write_table(out: &mut dyn Write, headers: &[&str], rows: &[Vec<String>]) -> std::io::Result<()> {
    let w = widths(headers, rows);
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    writeln!(out, "{}", format_row(&header, &w))?;
    for row in rows {
        writeln!(out, "{}", format_row(row, &w))?;
    }
    Ok(())
}

fn write_call_history(out: &mut dyn Write, records: &[CallRecord]) -> std::io::Result<()> {
    let headers = [
        "START (UTC)",
        "FROM",
        "TO",
        "DIRECTION",
        "DURATION(s)",
        "END CAUSE",
        "SIP",
    ];
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|c| {
            vec![
                format_unix_ms(c.started_at),
                c.from.clone(),
                c.to.clone(),
                c.direction.clone(),
                format!("{:.1}", c.duration_ms as f64 / 1000.0),
                c.end_cause.clone(),
                c.sip_status.to_string(),
            ]
        })
        .collect();
    let w = widths(&headers, &rows);
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    writeln!(out, "{}", format_row(&header, &w))?;
    for (call, row) in records.iter().zip(&rows) {
        writeln!(out, "{}", format_row(row, &w))?;
        for leg in &call.legs {
            let answered = match leg.answered_at {
                Some(t) => format!("answered +{:.1}s", (t - leg.started_at) as f64 / 1000.0),
                None => "unanswered".to_string(),
            };
            let contact = leg
                .contact
                .as_deref()
                .map(|c| format!("  contact {c}"))
                .unwrap_or_default();
            writeln!(
                out,
                "    {:<6} {:<3} {} -> {}  {answered}  {} {}{contact}",
                leg.role, leg.direction, leg.from, leg.to, leg.end_cause, leg.sip_status
            )?;
        }
    }
    Ok(())
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) for unix milliseconds (instants beyond the years -9999 to 9999
/// as the nearest of the two).
fn format_unix_ms(ms: i64) -> String {
    const LISTING: &[time::format_description::BorrowedFormatItem<'_>] =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    let t = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)).unwrap_or(if ms < 0 {
        time::PrimitiveDateTime::MIN.assume_utc()
    } else {
        time::PrimitiveDateTime::MAX.assume_utc()
    });
    // Every component the description names is in an `OffsetDateTime`: this cannot fail.
    t.format(LISTING).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};
    use hookflash_store::{ha1, DigestAlgorithm, LegRecord};
    use std::path::PathBuf;

    /// Mirrors main.rs: `serve` plus the flattened admin commands.
    #[derive(Parser, Debug)]
    struct TestCli {
        #[command(subcommand)]
        command: TestCommand,
    }

    #[derive(Subcommand, Debug)]
    enum TestCommand {
        Serve,
        #[command(flatten)]
        Admin(AdminCommand),
    }

    fn parse(args: &[&str]) -> Result<AdminCommand, clap::Error> {
        let mut argv = vec!["hookflash"];
        argv.extend_from_slice(args);
        match TestCli::try_parse_from(argv)?.command {
            TestCommand::Admin(cmd) => Ok(cmd),
            TestCommand::Serve => panic!("parsed as serve"),
        }
    }

    fn temp_dir() -> PathBuf {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        std::env::temp_dir().join(format!("hookflash-cli-test-{}-{nanos}", std::process::id()))
    }

    async fn exec(store: &Store, args: &[&str]) -> Result<String, CliError> {
        let cmd = parse(args).unwrap();
        let mut out = Vec::new();
        execute(cmd, store, &mut out).await?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn command_tree_is_consistent() {
        TestCli::command().debug_assert();
    }

    #[test]
    fn parses_user_commands() {
        match parse(&[
            "user",
            "add",
            "201",
            "--password",
            "pw",
            "--name",
            "Alice",
            "--account",
            "acme",
        ])
        .unwrap()
        {
            AdminCommand::User {
                cmd:
                    UserCmd::Add {
                        extension,
                        password,
                        name,
                        account,
                    },
            } => {
                assert_eq!(extension, "201");
                assert_eq!(password.as_deref(), Some("pw"));
                assert_eq!(name.as_deref(), Some("Alice"));
                assert_eq!(account.account.as_deref(), Some("acme"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["user", "add", "201"]).unwrap(),
            AdminCommand::User {
                cmd: UserCmd::Add {
                    password: None,
                    account: AccountArg { account: None },
                    ..
                }
            }
        ));
        assert!(matches!(
            parse(&["user", "ls"]).unwrap(),
            AdminCommand::User {
                cmd: UserCmd::List { .. }
            }
        ));
        assert!(matches!(
            parse(&["user", "passwd", "201"]).unwrap(),
            AdminCommand::User {
                cmd: UserCmd::Passwd { password: None, .. }
            }
        ));
        assert!(parse(&["user", "add"]).is_err());
        match parse(&["user", "voicemail", "201", "on", "--account", "acme"]).unwrap() {
            AdminCommand::User {
                cmd:
                    UserCmd::Voicemail {
                        extension,
                        state,
                        account,
                    },
            } => {
                assert_eq!(extension, "201");
                assert_eq!(state, Some(OnOff::On));
                assert_eq!(account.account.as_deref(), Some("acme"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["user", "voicemail", "201", "off"]).unwrap(),
            AdminCommand::User {
                cmd: UserCmd::Voicemail {
                    state: Some(OnOff::Off),
                    ..
                }
            }
        ));
        assert!(matches!(
            parse(&["user", "voicemail", "201"]).unwrap(),
            AdminCommand::User {
                cmd: UserCmd::Voicemail { state: None, .. }
            }
        ));
        assert!(parse(&["user", "voicemail", "201", "maybe"]).is_err());
        assert!(parse(&["user", "voicemail"]).is_err());
    }

    #[test]
    fn parses_trunk_number_apikey_calls_account() {
        match parse(&[
            "trunk",
            "add",
            "carrier",
            "--host",
            "127.0.0.1",
            "--port",
            "5080",
        ])
        .unwrap()
        {
            AdminCommand::Trunk {
                cmd:
                    TrunkCmd::Add {
                        port,
                        transport,
                        username,
                        ..
                    },
            } => {
                assert_eq!(port, 5080);
                assert_eq!(transport, "udp");
                assert_eq!(username, None);
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["trunk", "add", "c", "--host", "h", "--transport", "tls"]).is_err());
        assert!(parse(&["trunk", "add", "c", "--host", "h", "--username", "u"]).is_err());
        assert!(parse(&[
            "trunk",
            "add",
            "c",
            "--host",
            "h",
            "--username",
            "u",
            "--password",
            "p"
        ])
        .is_ok());
        assert!(
            parse(&["number", "add", "+4930123456"]).is_err(),
            "--user is required"
        );
        assert!(matches!(
            parse(&["number", "add", "+4930123456", "--user", "201"]).unwrap(),
            AdminCommand::Number {
                cmd: NumberCmd::Add { .. }
            }
        ));
        match parse(&["apikey", "create"]).unwrap() {
            AdminCommand::Apikey {
                cmd: ApikeyCmd::Create { name, .. },
            } => assert_eq!(name, "cli"),
            other => panic!("{other:?}"),
        }
        match parse(&["calls", "history", "--limit", "5", "--account", "acme"]).unwrap() {
            AdminCommand::Calls {
                cmd: CallsCmd::History { limit, account },
            } => {
                assert_eq!(limit, 5);
                assert_eq!(account.account.as_deref(), Some("acme"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["account", "add", "acme", "--realm", "acme.local"]).unwrap(),
            AdminCommand::Account {
                cmd: AccountCmd::Add { realm: Some(_), .. }
            }
        ));
        assert!(matches!(
            TestCli::try_parse_from(["hookflash", "serve"])
                .unwrap()
                .command,
            TestCommand::Serve
        ));
    }

    #[test]
    fn parses_dial_commands() {
        use hookflash_store::DialClass;
        match parse(&[
            "account",
            "dial",
            "--account",
            "acme",
            "--country",
            "49",
            "--allow",
            "internal, National,international",
            "--outside-sessions",
            "true",
            "--max-outbound",
            "5",
            "--per-minute",
            "0",
        ])
        .unwrap()
        {
            AdminCommand::Account {
                cmd:
                    AccountCmd::Dial {
                        account,
                        country,
                        allow,
                        outside_sessions,
                        max_outbound,
                        per_minute,
                    },
            } => {
                assert_eq!(account.account.as_deref(), Some("acme"));
                assert_eq!(country.as_deref(), Some("49"));
                assert_eq!(
                    allow,
                    Some(DialClasses::of([
                        DialClass::Internal,
                        DialClass::National,
                        DialClass::International
                    ]))
                );
                assert_eq!(outside_sessions, Some(true));
                assert_eq!((max_outbound, per_minute), (Some(5), Some(0)));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["account", "dial"]).unwrap(),
            AdminCommand::Account {
                cmd: AccountCmd::Dial {
                    country: None,
                    allow: None,
                    outside_sessions: None,
                    max_outbound: None,
                    per_minute: None,
                    ..
                }
            }
        ));
        assert!(matches!(
            parse(&["account", "dial", "--allow", ""]).unwrap(),
            AdminCommand::Account {
                cmd: AccountCmd::Dial {
                    allow: Some(DialClasses::NONE),
                    ..
                }
            }
        ));
        let err = parse(&["account", "dial", "--allow", "internal,mobile"]).unwrap_err();
        assert!(err.to_string().contains("mobile"), "{err}");
        assert!(parse(&["account", "dial", "--outside-sessions", "maybe"]).is_err());
        assert!(parse(&["account", "dial", "--max-outbound", "-1"]).is_err());

        match parse(&[
            "user",
            "dial",
            "201",
            "--allow",
            "account",
            "--account",
            "acme",
        ])
        .unwrap()
        {
            AdminCommand::User {
                cmd:
                    UserCmd::Dial {
                        extension,
                        allow,
                        account,
                    },
            } => {
                assert_eq!(extension, "201");
                assert_eq!(allow, UserDial::Account);
                assert_eq!(account.account.as_deref(), Some("acme"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["user", "dial", "201", "--allow", "Internal"]).unwrap(),
            AdminCommand::User {
                cmd: UserCmd::Dial {
                    allow: UserDial::Own(c),
                    ..
                }
            } if c == DialClasses::of([DialClass::Internal])
        ));
        assert!(
            parse(&["user", "dial", "201"]).is_err(),
            "--allow is required"
        );
        assert!(parse(&["user", "dial", "201", "--allow", "bogus"]).is_err());
    }

    #[tokio::test]
    async fn dial_permissions() {
        use hookflash_store::DialClass;
        let store = Store::open_memory().await.unwrap();
        let acc = store.create_account("acme", "acme.local").await.unwrap();
        store.create_account("beta", "beta.local").await.unwrap();

        let out = exec(&store, &["account", "dial"]).await.unwrap();
        assert_eq!(
            out,
            "dial policy of account acme\n\
             \x20 country code:         inferred from the account's numbers\n\
             \x20 may dial:             internal,national\n\
             \x20 outside sessions:     denied\n\
             \x20 max outbound calls:   20\n\
             \x20 outbound per minute:  60\n"
        );

        let out = exec(
            &store,
            &[
                "account",
                "dial",
                "--country",
                "49",
                "--allow",
                "internal,national,international",
                "--outside-sessions",
                "true",
                "--max-outbound",
                "0",
                "--per-minute",
                "10",
            ],
        )
        .await
        .unwrap();
        for part in [
            "country code:         49\n",
            "may dial:             internal,national,international\n",
            "outside sessions:     allowed\n",
            "max outbound calls:   unlimited\n",
            "outbound per minute:  10\n",
        ] {
            assert!(out.contains(part), "{part:?} missing in {out}");
        }
        let set = DialPolicy {
            country_code: Some("49".into()),
            classes: DialClasses::of([
                DialClass::Internal,
                DialClass::National,
                DialClass::International,
            ]),
            outside_sessions: true,
            max_outbound_calls: 0,
            outbound_calls_per_minute: 10,
        };
        assert_eq!(
            store.account_by_id(&acc.id).await.unwrap().unwrap().dial,
            set
        );

        // One option changes one field.
        let out = exec(
            &store,
            &["account", "dial", "--country", "none", "--allow", ""],
        )
        .await
        .unwrap();
        assert!(out.contains("may dial:             none\n"), "{out}");
        assert_eq!(
            store.account_by_id(&acc.id).await.unwrap().unwrap().dial,
            DialPolicy {
                country_code: None,
                classes: DialClasses::NONE,
                ..set
            }
        );
        assert!(matches!(
            exec(&store, &["account", "dial", "--country", "+49"]).await,
            Err(CliError::Store(StoreError::Invalid(_)))
        ));
        assert!(matches!(
            exec(&store, &["account", "dial", "--account", "nope"]).await,
            Err(CliError::AccountNotFound(_))
        ));
        // --account selects another account.
        let beta = exec(&store, &["account", "dial", "--account", "beta"])
            .await
            .unwrap();
        assert!(
            beta.contains("may dial:             internal,national\n"),
            "{beta}"
        );

        // Users: own list or the account's.
        exec(&store, &["account", "dial", "--allow", "internal,national"])
            .await
            .unwrap();
        let u = store.add_user(&acc.id, "201", "pw", None).await.unwrap();
        let out = exec(
            &store,
            &["user", "dial", "201", "--allow", "internal,premium"],
        )
        .await
        .unwrap();
        assert_eq!(
            out,
            "dial classes of user 201: internal,premium (with the account's \
             internal,national: internal)\n"
        );
        assert_eq!(
            store.user_by_id(&u.id).await.unwrap().unwrap().dial_classes,
            Some(DialClasses::of([DialClass::Internal, DialClass::Premium]))
        );
        let out = exec(&store, &["user", "dial", "201", "--allow", "account"])
            .await
            .unwrap();
        assert_eq!(
            out,
            "dial classes of user 201: the account's (internal,national)\n"
        );
        assert_eq!(
            store.user_by_id(&u.id).await.unwrap().unwrap().dial_classes,
            None
        );
        assert!(matches!(
            exec(&store, &["user", "dial", "999", "--allow", "account"]).await,
            Err(CliError::NotFound(_))
        ));
    }

    #[test]
    fn formats_utc_times() {
        assert_eq!(format_unix_ms(0), "1970-01-01 00:00:00");
        assert_eq!(format_unix_ms(1_700_000_000_123), "2023-11-14 22:13:20");
        assert_eq!(format_unix_ms(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(format_unix_ms(-1_000), "1969-12-31 23:59:59");
        assert_eq!(format_unix_ms(-1), "1969-12-31 23:59:59");
        assert_eq!(format_unix_ms(i64::MAX), "9999-12-31 23:59:59");
    }

    #[tokio::test]
    async fn run_uses_the_data_dir() {
        let dir = temp_dir();
        let config = Config {
            data_dir: dir.clone(),
            ..Config::default()
        };
        run(
            parse(&["account", "add", "acme", "--realm", "acme.local"]).unwrap(),
            &config,
        )
        .await
        .unwrap();
        let err = run(parse(&["account", "add", "acme"]).unwrap(), &config)
            .await
            .unwrap_err();
        assert!(
            matches!(err, CliError::Store(StoreError::Conflict(_))),
            "{err}"
        );
        let store = Store::open(&dir).await.unwrap();
        let acc = store.account_by_name("acme").await.unwrap().unwrap();
        assert_eq!(acc.realm, "acme.local");
        store.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn commands_need_an_account() {
        let store = Store::open_memory().await.unwrap();
        assert!(matches!(
            exec(&store, &["user", "list"]).await,
            Err(CliError::NoAccount)
        ));
        store.create_account("acme", "acme.local").await.unwrap();
        assert!(matches!(
            exec(&store, &["user", "list", "--account", "nope"]).await,
            Err(CliError::AccountNotFound(_))
        ));
        let out = exec(&store, &["user", "list"]).await.unwrap();
        assert_eq!(out, "no users in account acme\n");
    }

    #[tokio::test]
    async fn user_lifecycle() {
        let store = Store::open_memory().await.unwrap();
        let acc = store.create_account("acme", "acme.local").await.unwrap();

        // Random password: printed once and valid.
        let out = exec(&store, &["user", "add", "201", "--name", "Alice"])
            .await
            .unwrap();
        let pw = out
            .lines()
            .find_map(|l| l.strip_prefix("password: "))
            .unwrap()
            .to_string();
        assert_eq!(pw.len(), 12);
        let u = store
            .user_by_extension(&acc.id, "201")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            u.ha1_md5,
            ha1(DigestAlgorithm::Md5, "201", "acme.local", &pw)
        );

        // Given password: not echoed.
        let out = exec(&store, &["user", "add", "202", "--password", "s3cret"])
            .await
            .unwrap();
        assert!(!out.contains("s3cret"));
        assert!(matches!(
            exec(&store, &["user", "add", "202", "--password", "x"]).await,
            Err(CliError::Store(StoreError::Conflict(_)))
        ));

        let list = exec(&store, &["user", "list"]).await.unwrap();
        let lines: Vec<&str> = list.lines().collect();
        assert_eq!(lines.len(), 3, "{list}");
        assert!(lines[0].starts_with("EXTENSION"));
        assert!(
            lines[1].starts_with("201") && lines[1].contains("Alice"),
            "{list}"
        );
        assert!(
            lines[2].starts_with("202") && lines[2].contains(" - "),
            "{list}"
        );

        exec(&store, &["user", "passwd", "202", "--password", "new"])
            .await
            .unwrap();
        let u = store
            .user_by_extension(&acc.id, "202")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            u.ha1_sha256,
            ha1(DigestAlgorithm::Sha256, "202", "acme.local", "new")
        );
        assert!(matches!(
            exec(&store, &["user", "passwd", "999"]).await,
            Err(CliError::NotFound(_))
        ));

        exec(&store, &["user", "remove", "202"]).await.unwrap();
        assert!(store
            .user_by_extension(&acc.id, "202")
            .await
            .unwrap()
            .is_none());
        assert!(matches!(
            exec(&store, &["user", "rm", "202"]).await,
            Err(CliError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn voicemail_on_off() {
        let store = Store::open_memory().await.unwrap();
        let acc = store.create_account("acme", "acme.local").await.unwrap();
        let u = store.add_user(&acc.id, "201", "pw", None).await.unwrap();

        let out = exec(&store, &["user", "voicemail", "201"]).await.unwrap();
        assert_eq!(out, "voicemail of user 201: off (default greeting)\n");
        assert_eq!(
            store.mailbox(&u.id).await.unwrap(),
            None,
            "showing creates nothing"
        );

        let out = exec(&store, &["user", "voicemail", "201", "on"])
            .await
            .unwrap();
        assert_eq!(out, "voicemail of user 201: on (default greeting)\n");
        assert!(store.mailbox(&u.id).await.unwrap().unwrap().enabled);

        // The greeting is kept when switching.
        store.set_greeting(&u.id, Some("/g.wav")).await.unwrap();
        let out = exec(
            &store,
            &["user", "voicemail", "201", "off", "--account", "acme"],
        )
        .await
        .unwrap();
        assert_eq!(out, "voicemail of user 201: off (custom greeting)\n");
        let m = store.mailbox(&u.id).await.unwrap().unwrap();
        assert!(!m.enabled);
        assert_eq!(m.greeting_path.as_deref(), Some("/g.wav"));

        assert!(matches!(
            exec(&store, &["user", "voicemail", "999", "on"]).await,
            Err(CliError::NotFound(_))
        ));
        assert!(matches!(
            exec(
                &store,
                &["user", "voicemail", "201", "on", "--account", "nope"]
            )
            .await,
            Err(CliError::AccountNotFound(_))
        ));
    }

    #[tokio::test]
    async fn trunks_numbers_and_keys() {
        let store = Store::open_memory().await.unwrap();
        let acc = store.create_account("acme", "acme.local").await.unwrap();
        store.create_account("beta", "beta.local").await.unwrap();
        exec(&store, &["user", "add", "201", "--password", "pw"])
            .await
            .unwrap();

        exec(
            &store,
            &[
                "trunk",
                "add",
                "carrier",
                "--host",
                "127.0.0.1",
                "--port",
                "5080",
                "--username",
                "acct",
                "--password",
                "tpw",
            ],
        )
        .await
        .unwrap();
        let t = store.outbound_trunk(&acc.id).await.unwrap().unwrap();
        assert_eq!((t.port, t.password.as_deref()), (5080, Some("tpw")));
        let list = exec(&store, &["trunk", "list"]).await.unwrap();
        assert!(
            list.contains("carrier") && list.contains("5080") && !list.contains("tpw"),
            "{list}"
        );
        // --account selects another account.
        assert_eq!(
            exec(&store, &["trunk", "list", "--account", "beta"])
                .await
                .unwrap(),
            "no trunks in account beta\n"
        );
        exec(&store, &["trunk", "remove", "carrier"]).await.unwrap();
        assert!(store.trunks(&acc.id).await.unwrap().is_empty());

        let out = exec(&store, &["number", "add", "4930123456", "--user", "201"])
            .await
            .unwrap();
        assert!(out.contains("+4930123456"), "{out}");
        let list = exec(&store, &["number", "list"]).await.unwrap();
        assert_eq!(list.lines().nth(1).unwrap(), "+4930123456  201");
        exec(&store, &["number", "remove", "+4930123456"])
            .await
            .unwrap();
        assert!(store.lookup_number("4930123456").await.unwrap().is_none());

        let out = exec(&store, &["apikey", "create", "--name", "ci"])
            .await
            .unwrap();
        let key = out.lines().find_map(|l| l.strip_prefix("key: ")).unwrap();
        let meta = store.verify_api_key(key).await.unwrap().unwrap();
        assert_eq!(meta.account_id, acc.id);
        let list = exec(&store, &["apikey", "list"]).await.unwrap();
        assert!(list.contains(&meta.id) && !list.contains(key), "{list}");
        assert!(matches!(
            exec(&store, &["apikey", "revoke", &meta.id, "--account", "beta"]).await,
            Err(CliError::NotFound(_))
        ));
        exec(&store, &["apikey", "revoke", &meta.id]).await.unwrap();
        assert!(store.verify_api_key(key).await.unwrap().is_none());
    }

    #[test]
    fn parses_app_commands() {
        match parse(&[
            "app",
            "add",
            "acme",
            "ivr",
            "--call-hook",
            "http://h/call",
            "--method",
            "get",
            "--status-hook",
            "http://h/status",
        ])
        .unwrap()
        {
            AdminCommand::App {
                cmd:
                    AppCmd::Add {
                        account,
                        name,
                        call_hook,
                        method,
                        status_hook,
                        fallback,
                    },
            } => {
                assert_eq!((account.as_str(), name.as_str()), ("acme", "ivr"));
                assert_eq!(call_hook, "http://h/call");
                assert_eq!(method, HookMethod::Get);
                assert_eq!(status_hook.as_deref(), Some("http://h/status"));
                assert_eq!(fallback, None);
            }
            other => panic!("{other:?}"),
        }
        let err = parse(&[
            "app",
            "add",
            "acme",
            "ivr",
            "--call-hook",
            "http://h/",
            "--method",
            "PUT",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("PUT"), "{err}");
        assert!(
            parse(&["app", "add", "acme", "ivr"]).is_err(),
            "--call-hook is required"
        );
        assert!(matches!(
            parse(&["app", "ls", "acme"]).unwrap(),
            AdminCommand::App {
                cmd: AppCmd::List { .. }
            }
        ));
        assert!(parse(&["app", "rm", "acme"]).is_err());
        assert!(matches!(
            parse(&["app", "unnumber", "acme", "+4930"]).unwrap(),
            AdminCommand::App {
                cmd: AppCmd::Unnumber { .. }
            }
        ));
    }

    #[tokio::test]
    async fn applications_and_their_numbers() {
        let store = Store::open_memory().await.unwrap();
        let acc = store.create_account("acme", "acme.local").await.unwrap();
        store.create_account("beta", "beta.local").await.unwrap();
        exec(&store, &["user", "add", "201", "--password", "pw"])
            .await
            .unwrap();
        exec(&store, &["number", "add", "+4930123456", "--user", "201"])
            .await
            .unwrap();

        let out = exec(
            &store,
            &[
                "app",
                "add",
                "acme",
                "ivr",
                "--call-hook",
                "http://127.0.0.1:9/call",
                "--method",
                "GET",
                "--fallback",
                "https://fb.example/x",
            ],
        )
        .await
        .unwrap();
        assert!(
            out.contains("ivr") && out.contains("GET http://127.0.0.1:9/call"),
            "{out}"
        );
        let a = store
            .application_by_name(&acc.id, "ivr")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(a.call_hook.method, HookMethod::Get);
        assert_eq!(a.call_status_hook, None);
        assert_eq!(a.fallback, Some(Hook::post("https://fb.example/x")));

        // Refused: the same name, a bad URL, an unknown account.
        let again = ["app", "add", "acme", "ivr", "--call-hook", "http://h/"];
        assert!(matches!(
            exec(&store, &again).await,
            Err(CliError::Store(StoreError::Conflict(_)))
        ));
        let bad = ["app", "add", "acme", "x", "--call-hook", "ftp://h/"];
        assert!(matches!(
            exec(&store, &bad).await,
            Err(CliError::Store(StoreError::Invalid(_)))
        ));
        assert!(matches!(
            exec(&store, &["app", "list", "nope"]).await,
            Err(CliError::AccountNotFound(_))
        ));

        let out = exec(&store, &["app", "number", "acme", "ivr", "4930999000"])
            .await
            .unwrap();
        assert!(out.contains("+4930999000"), "{out}");
        let routed = store.application_for_number("+4930999000").await.unwrap();
        assert_eq!(routed.map(|x| x.id), Some(a.id.clone()));
        // A user's number, or an unknown application: refused.
        assert!(matches!(
            exec(&store, &["app", "number", "acme", "ivr", "+4930123456"]).await,
            Err(CliError::Store(StoreError::Conflict(_)))
        ));
        assert!(matches!(
            exec(&store, &["app", "number", "acme", "nope", "+4930999001"]).await,
            Err(CliError::NotFound(_))
        ));

        let list = exec(&store, &["app", "list", "acme"]).await.unwrap();
        let row = list.lines().nth(1).unwrap();
        assert!(
            row.starts_with("ivr")
                && row.contains("GET http://127.0.0.1:9/call")
                && row.contains("POST https://fb.example/x")
                && row.ends_with("+4930999000"),
            "{list}"
        );
        assert_eq!(
            exec(&store, &["app", "list", "beta"]).await.unwrap(),
            "no applications in account beta\n"
        );

        // Unroute: another account does not have it; then this one.
        assert!(matches!(
            exec(&store, &["app", "unnumber", "beta", "+4930999000"]).await,
            Err(CliError::NotFound(_))
        ));
        exec(&store, &["app", "unnumber", "acme", "+49 30 999000"])
            .await
            .unwrap();
        assert_eq!(
            store.application_for_number("+4930999000").await.unwrap(),
            None
        );
        assert!(matches!(
            exec(&store, &["app", "unnumber", "acme", "+4930999000"]).await,
            Err(CliError::NotFound(_))
        ));

        // Remove: its numbers are freed.
        exec(&store, &["app", "number", "acme", "ivr", "+4930999002"])
            .await
            .unwrap();
        exec(&store, &["app", "rm", "acme", "ivr"]).await.unwrap();
        assert!(store.applications(&acc.id).await.unwrap().is_empty());
        assert_eq!(
            store.application_for_number("+4930999002").await.unwrap(),
            None
        );
        assert!(matches!(
            exec(&store, &["app", "rm", "acme", "ivr"]).await,
            Err(CliError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn accounts_and_call_history() {
        let store = Store::open_memory().await.unwrap();
        assert_eq!(
            exec(&store, &["account", "list"]).await.unwrap(),
            "no accounts\n"
        );
        exec(&store, &["account", "add", "acme"]).await.unwrap();
        let acc = store.account_by_name("acme").await.unwrap().unwrap();
        assert_eq!(acc.realm, "acme");
        let list = exec(&store, &["account", "list"]).await.unwrap();
        assert!(
            list.lines().nth(1).unwrap().starts_with("*  acme"),
            "{list}"
        );

        assert_eq!(
            exec(&store, &["calls", "history"]).await.unwrap(),
            "no calls in account acme\n"
        );
        let leg = |id: &str, role: &str, dir: &str, answered: Option<i64>| LegRecord {
            id: id.into(),
            call_id: "call-1".into(),
            role: role.into(),
            direction: dir.into(),
            from: "sip:201@acme".into(),
            to: "sip:202@acme".into(),
            contact: Some("sip:202@127.0.0.1:5072".into()),
            started_at: 1_700_000_000_000,
            answered_at: answered,
            ended_at: 1_700_000_012_500,
            end_cause: "normal".into(),
            sip_status: 200,
        };
        for (id, start) in [
            ("call-1", 1_700_000_000_000i64),
            ("call-2", 1_700_000_100_000),
        ] {
            store
                .insert_call_record(&CallRecord {
                    id: id.into(),
                    account_id: Some(acc.id.clone()),
                    from: "sip:201@acme".into(),
                    to: "sip:202@acme".into(),
                    direction: "internal".into(),
                    started_at: start,
                    answered_at: Some(start + 2_500),
                    ended_at: start + 12_500,
                    duration_ms: 10_000,
                    end_cause: "caller_hangup".into(),
                    sip_status: 200,
                    legs: vec![
                        leg(&format!("{id}-a"), "caller", "in", Some(1_700_000_002_500)),
                        leg(&format!("{id}-b"), "callee", "out", None),
                    ],
                })
                .await
                .unwrap();
        }
        let out = exec(&store, &["calls", "history", "--limit", "1"])
            .await
            .unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        assert!(lines[0].starts_with("START (UTC)"));
        assert!(lines[1].starts_with("2023-11-14 22:15:00"), "{out}");
        for part in ["sip:201@acme", "internal", "10.0", "caller_hangup", "200"] {
            assert!(lines[1].contains(part), "{part} missing in {out}");
        }
        assert!(
            lines[2].starts_with("    caller") && lines[2].contains("answered +2.5s"),
            "{out}"
        );
        assert!(
            lines[3].starts_with("    callee") && lines[3].contains("unanswered"),
            "{out}"
        );
    }

    #[tokio::test]
    async fn webhooks_and_personal_access_tokens() {
        let store = Store::open_memory().await.unwrap();
        let acc = store.create_account("acme", "acme.local").await.unwrap();
        store.add_user(&acc.id, "201", "pw", None).await.unwrap();

        let out = exec(&store, &["user", "webhook", "201", "http://127.0.0.1:9/h"])
            .await
            .unwrap();
        assert!(out.contains("http://127.0.0.1:9/h"), "{out}");
        let u = store
            .user_by_extension(&acc.id, "201")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            store.user_webhook(&u.id).await.unwrap().as_deref(),
            Some("http://127.0.0.1:9/h")
        );
        assert!(
            parse(&["user", "webhook", "201"]).is_err(),
            "URL or --clear"
        );
        assert!(parse(&["user", "webhook", "201", "http://x", "--clear"]).is_err());
        assert!(matches!(
            exec(&store, &["user", "webhook", "201", "nope"]).await,
            Err(CliError::Store(StoreError::Invalid(_)))
        ));
        exec(&store, &["user", "webhook", "201", "--clear"])
            .await
            .unwrap();
        assert_eq!(store.user_webhook(&u.id).await.unwrap(), None);
        assert!(matches!(
            exec(&store, &["user", "webhook", "999", "--clear"]).await,
            Err(CliError::NotFound(_))
        ));

        let out = exec(&store, &["pat", "create", "--user", "201"])
            .await
            .unwrap();
        let field = |name: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::to_string)
                .unwrap()
        };
        let (id, token) = (field("token id: "), field("token: "));
        assert!(hookflash_store::is_pat_id(&id), "{out}");
        let (_, user) = store.verify_pat(&id, &token).await.unwrap().unwrap();
        assert_eq!(user.extension, "201");
        let list = exec(&store, &["pat", "ls"]).await.unwrap();
        assert!(list.contains(&id) && list.contains("201") && !list.contains(&token));
        assert!(matches!(
            exec(&store, &["pat", "create", "--user", "999"]).await,
            Err(CliError::Store(StoreError::NotFound(_)))
        ));
        exec(&store, &["pat", "revoke", &id]).await.unwrap();
        assert!(store.verify_pat(&id, &token).await.unwrap().is_none());
    }
}
