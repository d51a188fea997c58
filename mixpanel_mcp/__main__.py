from mixpanel_mcp.cli import main

main()
