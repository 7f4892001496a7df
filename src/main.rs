//! The `interop-bridge` binary: parses the command line, sets up logging, runs the command.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use interop_bridge::admin::Request;
use interop_bridge::cli::{self, Cli, Command};
use interop_bridge::config::Config;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match execute(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// glibc gives threads that allocate at the same time arenas of their own (up to eight per
/// core), and with many idle logins those arenas held ~20 KiB per login of freed memory
/// (docs/performance.md, "Many identities"). The daemon caps them at two by executing itself
/// again with `MALLOC_ARENA_MAX=2` (read by glibc when the process starts, ignored by other C
/// libraries), before any thread exists; an environment that sets the variable is left as it
/// is, and a failed exec changes nothing.
fn cap_malloc_arenas() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let mut again = std::process::Command::new(exe);
    if let Some(name) = args.next() {
        again.arg0(name);
    }
    // Returns only if the exec failed.
    let _ = again.args(args).env("MALLOC_ARENA_MAX", "2").exec();
}

fn execute(command: Command) -> anyhow::Result<()> {
    if let Some((config, request)) = cli::admin_request(&command) {
        println!("{}", cli::admin_call(config, &request)?);
        return Ok(());
    }
    match command {
        Command::Run { config } => {
            cap_malloc_arenas();
            let config = Config::load(&config)?;
            let filter = EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new(&config.logging.level));
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(std::io::stderr)
                .init();
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(interop_bridge::daemon::run(config))
        }
        Command::GenerateConfig { set } => {
            cli::generate_config(&set, &mut std::io::stdout().lock())
        }
        Command::GenerateRegistration { config, output } => {
            let path = cli::generate_registration(&config, output.as_deref())?;
            eprintln!(
                "wrote {}; add it to the homeserver's appservice registrations",
                path.display()
            );
            Ok(())
        }
        Command::CheckConfig { config } => {
            println!("{}", cli::check_config(&config)?);
            Ok(())
        }
        Command::Link {
            config,
            user,
            jid,
            password_file,
            password_env,
            register,
        } => {
            let password =
                cli::link_password(password_file.as_deref(), password_env.as_deref(), register)?;
            let request = Request::Link {
                user,
                jid,
                password,
                register,
            };
            println!("{}", cli::admin_call(&config, &request)?);
            Ok(())
        }
        Command::Unlink { .. }
        | Command::Identities { .. }
        | Command::Status { .. }
        | Command::Devices { .. }
        | Command::SafetyNumber { .. }
        | Command::Trust { .. }
        | Command::Untrust { .. } => unreachable!("sent to the bridge by cli::admin_request"),
    }
}
