"""The `fusionmamba` command line: thin Typer commands over the library. Nothing outside this
package imports Typer or Rich."""
