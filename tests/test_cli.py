"The synthsae command: dispatch and argument errors"
import pytest
from synthsae.cli import main, COMMANDS

def test_commands():
    assert set(COMMANDS) >= {'worlds', 'reproduce', 'train', 'eval', 'docs'}

def test_usage(capsys):
    assert main([]) == 2 and main(['nope']) == 2
    assert main(['--help']) == 0
    assert 'reproduce' in capsys.readouterr().out

@pytest.mark.parametrize('argv,msg', [
    (['reproduce', '--scale', 'huge'], "scale must be one of ['tiny', 'cpu', 'paper']"),
    (['reproduce', '--scale', 'tiny', '--only', 'F99'], "unknown notebook or item ID(s) ['F99']"),
    (['reproduce', '--scale', 'tiny', '--out', '/nonexistent_parent_dir/reports'], 'parent folder'),
    (['train'], 'config: give --config'),
    (['train', '--config', '/nonexistent.json'], 'config: no such file'),
    (['eval'], 'sae and model are required'),
    (['eval', '--sae', '/nonexistent', '--model', 'tiny'], 'sae: no such folder'),
])
def test_argument_errors(capsys, argv, msg):
    assert main(argv) == 2
    assert msg in capsys.readouterr().err

def test_dashed_options(tmp_path, capsys):
    "`--num-samples` is accepted as `--num_samples`"
    assert main(['eval', '--sae', str(tmp_path), '--model', 'huge', '--num-samples', '10']) == 2
    assert 'model must be one of' in capsys.readouterr().err

def test_bad_option_exits():
    with pytest.raises(SystemExit): main(['reproduce', '--no-such-option', '1'])
