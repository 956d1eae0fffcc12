@echo off
rem Allegro Studio for Windows: double-click, or "run.bat update". Untested on Windows yet.
rem Finds Python 3.10-3.13 (or installs a private one with uv); python -m launcher does the rest.
setlocal
cd /d "%~dp0"
set "CHECK=import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 13))"
set "PY="
if exist ".venv\Scripts\python.exe" set "PY=.venv\Scripts\python.exe"
for %%V in (3.13 3.12 3.11 3.10) do if not defined PY py -%%V -c "%CHECK%" >nul 2>&1 && set "PY=py -%%V"
if not defined PY python -c "%CHECK%" >nul 2>&1 && set "PY=python"
if not defined PY where uv >nul 2>&1 && uv python install 3.12 && for /f "delims=" %%P in ('uv python find 3.12') do set "PY="%%P""
if not defined PY (
    echo Allegro Studio could not start: it needs Python 3.10 to 3.13; install it from https://www.python.org/downloads/ and run this again. (full log: %CD%\logs\launcher.log^)
    if not exist logs mkdir logs
    >> logs\launcher.log echo Allegro Studio could not start: no Python 3.10 to 3.13 found.
    pause
    exit /b 1
)
%PY% -m launcher %*
set "CODE=%errorlevel%"
if not "%CODE%"=="0" pause
exit /b %CODE%
