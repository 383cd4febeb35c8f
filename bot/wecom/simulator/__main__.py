"""`python -m bot.wecom.simulator`: run the simulator without the bot's command line."""

from bot.wecom.simulator.cli import main

main()
