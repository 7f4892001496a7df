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

fn execute(command: Command) -> anyhow::Result<()> {
    if let Some((config, request)) = cli::admin_request(&command) {
        println!("{}", cli::admin_call(config, &request)?);
        return Ok(());
    }
    match command {
        Command::Run { config } => {
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
